"""The ONNX op converters, one module per family; importing this package fills the table."""

from . import control, elementwise, extra, image, indexing, loss, misc, nn, quantize, recurrent, shape  # noqa: F401
from . import attention  # noqa: F401
