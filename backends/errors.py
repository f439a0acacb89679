"""Errors the backends raise. The resolvers translate them into API errors.

BackendError
├── Conflict          the id is taken
├── Missing           the room or channel does not exist (any more)
├── LimitReached      a per-user quota would be exceeded
└── Unavailable       the backing service cannot be reached
"""


class BackendError(Exception):
    pass


class Conflict(BackendError):
    pass


class Missing(BackendError, LookupError):
    pass


class LimitReached(BackendError):
    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"{what} limit of {limit} reached")
        self.what = what
        self.limit = limit


class Unavailable(BackendError):
    pass
