"""The ONNX op converters, one module per family; importing this package fills the table."""

from . import (  # noqa: F401
    attention,
    control,
    elementwise,
    extra,
    image,
    indexing,
    loss,
    misc,
    nn,
    qlinear,
    quantize,
    recurrent,
    sampling,
    shape,
    signal,
)
