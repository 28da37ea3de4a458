"""The error types every layer shares."""


class SpecError(ValueError):
    """Invalid Tenant input. The message always starts with the field path."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class ConfigError(ValueError):
    """Invalid operator configuration; names the offending key."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config {key}: {message}")


class BackendUnavailable(RuntimeError):
    """A backend (MySQL, object storage, RabbitMQ) could not be reached or refused
    an admin call. `backend` names it; the message is safe to show in status."""

    def __init__(self, backend: str, message: str):
        self.backend = backend
        super().__init__(f"{backend}: {message}")
