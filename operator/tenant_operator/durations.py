"""Go-style durations ('720h', '30d', '1h30m', '45s') as used in the CRD and config."""

import re

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(value: "str | int") -> int:
    """Return seconds; raise ValueError with a readable message otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return value
    m = _DURATION.match(str(value).strip())
    if not m or not any(m.groups()):
        raise ValueError(f"invalid duration {value!r}: use e.g. 720h, 30d, 1h30m, 45s")
    d, h, mi, s = (int(g or 0) for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def format_duration(seconds: int) -> str:
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v) or "0s"
