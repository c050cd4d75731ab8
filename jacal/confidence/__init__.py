"""Confidence estimators (which predictions to trust, which to send to human review) and their metrics.

* :mod:`jacal.confidence.core`: the array core, :func:`confidence_from` and :func:`fit_confidence`
  (logits, embeddings, Jacobian Gram in; ``(N,)`` confidences out), with every method's maths;
* :mod:`jacal.confidence.estimator`: :class:`ConfidenceEstimator`, model and items in, and its file;
  :func:`confidence_features`, the arrays those methods read, from the one feature pass
  (:func:`jacal.features.extract_features`);
* :mod:`jacal.confidence.metrics`: failure AUROC, AURC, E-AURC, FPR@95%TPR, ECE, OOD AUROC.

Methods (:data:`METHODS`): softmax baselines (``max-softmax``, ``entropy``, ``margin``), logit
baselines (``max-logit``, ``energy``), ``temperature`` scaling, ``odin``, feature-space
``mahalanobis`` and ``knn``, and the Jacobian estimators ``jacobian`` (−log ‖∂p/∂x‖),
``jacobian-logits`` (−log ‖∂z/∂x‖), ``jacobian-residual`` (the sensitivity the softmax does not
predict), ``jacobian-boundary`` (first-order distance to the nearest decision boundary) and
``combined`` (logistic regression on softmax and Jacobian features).
"""
from jacal.confidence.core import (FITTED, JACOBIAN_METHODS, METHODS, NEEDS_LABELS, PROBABILISTIC, confidence_from,
                                   fit_confidence, inputs_of, jacobian_features, softmax_features)
from jacal.confidence.estimator import ConfidenceEstimator, ConfidenceFeatures, confidence_features
from jacal.confidence.metrics import (aurc, confidence_metrics, e_aurc, ece, failure_auroc, fpr_at_95_tpr, ood_auroc,
                                      ood_fpr_at_95_tpr, ood_metrics)
from jacal.features import odin_logits

__all__ = [
    "METHODS", "FITTED", "NEEDS_LABELS", "PROBABILISTIC", "JACOBIAN_METHODS",
    "confidence_from", "fit_confidence", "inputs_of", "jacobian_features", "softmax_features",
    "ConfidenceEstimator",
    "ConfidenceFeatures", "confidence_features", "odin_logits",
    "failure_auroc", "aurc", "e_aurc", "fpr_at_95_tpr", "ece", "confidence_metrics",
    "ood_auroc", "ood_fpr_at_95_tpr", "ood_metrics",
]
