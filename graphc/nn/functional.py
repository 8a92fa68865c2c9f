"""``graphc.nn.functional`` is ``graphc.functional`` (as torch.nn.functional is to torch.nn)."""

from graphc.functional import *  # noqa: F403
from graphc.functional import __all__  # noqa: F401
