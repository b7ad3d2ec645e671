"""What gradguard reads off an ``nn.Module``: its layers and their forward order, its skip
connections, its activation modules, and the tensors its calls produce."""

from gradguard.model.activations import activation_bounds, saturation_tolerance
from gradguard.model.layers import LayerInfo, discover_layers, forward_order
from gradguard.model.structure import has_skip_connection, residual_hint
from gradguard.model.tensors import first_tensor, local

__all__ = [
    "LayerInfo",
    "activation_bounds",
    "discover_layers",
    "first_tensor",
    "forward_order",
    "has_skip_connection",
    "local",
    "residual_hint",
    "saturation_tolerance",
]
