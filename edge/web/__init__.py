"""The page a clinic's tablet or phone opens, served by the board (opt-in): live view, capture, review, export."""


class WebError(RuntimeError):
    """The page cannot be served (address in use, certificate unreadable): one line."""
