"""Errors a user can cause. The CLI prints them as one line and exits 2; anything else keeps its traceback.

Also the redaction of secrets: the CLI registers the values of secret-looking environment variables
(`register_secret`), and every file kdagent writes (kdagent/jsonl.py) and everything it prints on stdout and
stderr, tracebacks included (`RedactingStream`), has them replaced by `***`. Messages are masked before
they are cut to length (`one_line`), so that no secret is ever written in part.
"""

import base64
import errno
import io
import os
import re


class UserError(Exception):
    """Bad recipe, data, plugin or model name: reported in one line, exit status 2."""

    exit_code = 2


class WorkError(UserError):
    """The work failed for a reason the user can act on (a plugin that raised, a full disk): one line, exit 1."""

    exit_code = 1


def did_you_mean(word: str, names, cutoff: float = 0.6) -> str | None:
    """The registered or valid name closest to a misspelt `word` (difflib), or None when none is close."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(n) for n in names], n=1, cutoff=cutoff)
    return close[0] if close else None


# -- secrets ------------------------------------------------------------------------------------------------
SECRET_NAME = re.compile(r"key|token|secret|password|credential", re.IGNORECASE)
MASK = "***"
_secrets: set[str] = set()


def kind_options(model, options: dict, field: str, owner: str):
    """`options` (a recipe's `field`, e.g. `teacher.options`) validated by a registered kind's `options_model`;
    None for a kind without one, which takes no options (`owner` names it: "the 'self' teacher"). Invalid
    ones are a one-line UserError naming `<field>.<key>`, with a did-you-mean for a misspelt key."""
    from pydantic import ValidationError

    if model is None:
        if options:
            raise UserError(f"{field}: {owner} takes no options (got {', '.join(map(repr, options))})")
        return None
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        raise options_error(exc, field, model) from None


def options_error(exc, field: str, model) -> UserError:
    """A pydantic ValidationError of the options model `model`, read at recipe field `field`, as one UserError
    line naming `<field>.<key>` for each problem, with a did-you-mean for a misspelt key."""
    parts = []
    for err in exc.errors():
        path = ".".join([field, *(str(p) for p in err["loc"])])
        if err["type"] == "extra_forbidden":
            close = did_you_mean(str(err["loc"][-1]), list(model.model_fields))
            hint = f"did you mean '{field}.{close}'?" if close else f"valid keys: {', '.join(model.model_fields)}"
            parts.append(f"unknown key {path!r} ({hint})")
        else:
            parts.append(f"{path}: {err['msg']}")
    return UserError("; ".join(parts))


def register_secret(value: str | None, min_length: int = 8) -> None:
    """A value that must never be written or printed, with the forms it takes in URLs and headers. Values
    found by their variable's name shorter than 8 characters are ignored (they would mask words); a value
    named as a secret (the recipe's api_key_env) counts from 4."""
    if value and len(value) >= min_length:
        _secrets.update(secret_forms(value))


def secret_forms(value: str) -> set[str]:
    """`value`, URL-encoded (query and path forms), and base64 as inside a Basic-auth header: there the
    value follows `user:`, so its encoding depends on where it starts within a 3-byte group; the groups
    wholly inside the value encode the same way whatever came before, and those are masked."""
    from urllib.parse import quote, quote_plus

    forms = {value, quote(value, safe=""), quote(value), quote_plus(value)}
    raw = value.encode("utf-8", "surrogatepass")
    for start in range(3):
        whole = raw[start : start + (len(raw) - start) // 3 * 3]
        if len(whole) >= 6:
            forms.update({base64.b64encode(whole).decode(), base64.urlsafe_b64encode(whole).decode()})
    return forms


def register_environment_secrets(names: list[str] | None = None) -> None:
    """The values of `names` (the recipe's api_key_env), and of every environment variable whose name looks
    like a secret and whose value looks like a key (no path separator, no space: paths are not masked)."""
    for name, value in os.environ.items():
        if name in (names or []):
            register_secret(value, min_length=4)
        elif SECRET_NAME.search(name) and "/" not in value and not any(c.isspace() for c in value):
            register_secret(value)


def redact(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):  # a longer form first: it may contain a shorter one
        if secret in text:
            text = text.replace(secret, MASK)
    return text


MAX_LINE = 500


def one_line(text: str, limit: int = MAX_LINE) -> str:
    """`text` as one line of at most `limit` characters: secrets masked over the whole text first (a secret
    across a cut is never written in part), line breaks folded, and a longer text cut in the middle with its
    full length noted, so that its end (a "did you mean", what to do next) is kept."""
    text = " ".join(redact(str(text)).strip().splitlines())
    if len(text) <= limit:
        return text
    note = f" ... ({len(text)} characters in all) ... "
    tail = max((limit - len(note)) // 3, 0)
    head = max(limit - len(note) - tail, 0)
    return text[:head] + note + (text[-tail:] if tail else "")


class RedactingStream(io.TextIOBase):
    """A text stream that redacts secrets from each write before passing it on."""

    def __init__(self, inner):
        self.inner = inner

    def write(self, text: str) -> int:
        self.inner.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def fileno(self) -> int:
        return self.inner.fileno()

    def isatty(self) -> bool:
        return self.inner.isatty()

    @property
    def encoding(self):
        return getattr(self.inner, "encoding", "utf-8")


# -- a full disk --------------------------------------------------------------------------------------------
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_FULL_TEXT = (
    "no space left on device",
    "disk quota exceeded",
    "file too large",
    "database or disk is full",
    "storagefull",
    "file write failed",
)


def disk_full(exc: BaseException, folder) -> str | None:
    """A one-line explanation when `exc` (or an exception it came from) is a write that ran out of room."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc).lower()
        if (isinstance(exc, OSError) and exc.errno in _FULL) or any(t in text for t in _FULL_TEXT):
            try:
                st = os.statvfs(folder)
                free = f"{st.f_bavail * st.f_frsize / 2**20:.1f} MiB free"
            except OSError:
                free = "free space unknown"
            why = (
                os.strerror(exc.errno)
                if isinstance(exc, OSError) and exc.errno in _FULL
                else one_line(str(exc).strip().splitlines()[0], 200)
            )
            return (
                f"out of disk space while writing under {folder} ({why}; {free}). The files written before are intact: "
                "free some space (or raise the limit), then continue with --resume"
            )
        exc = exc.__cause__ or exc.__context__
    return None
