"""The one exception type every graphc stage raises for user-facing errors."""


class GraphcError(Exception):
    """A problem with a model, graph, plan or input that the user can act on."""
