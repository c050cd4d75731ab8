"""Per-point sensitivity metrics: Jacobian norms, region codes, transitions, trajectories."""
from jacal.sensitivity.embedding import jacobian_embedding
from jacal.sensitivity.gram import JacobianGram, jacobian_gram
from jacal.sensitivity.jacobian import METHODS, OUTPUTS, jacobian_norm
from jacal.sensitivity.trajectories import ellipse, random_ellipse
from jacal.sensitivity.transitions import TransitionResult, activation_codes, transitions

__all__ = [
    "jacobian_norm", "jacobian_embedding", "jacobian_gram", "JacobianGram", "OUTPUTS", "METHODS",
    "activation_codes", "transitions", "TransitionResult",
    "ellipse", "random_ellipse",
]
