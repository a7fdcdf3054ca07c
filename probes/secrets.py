"""Masking of secrets in environments and command lines, applied to every snapshot and output."""

from __future__ import annotations

import re

_SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
MASK = "****"
_SECRET_FLAGS = {"--api-key", "--hf-token", "--token", "--password", "--secret"}


def is_secret_name(name: str) -> bool:
    """True for environment names that look like credentials (HF_TOKEN, OPENAI_API_KEY …)."""
    return bool(_SECRET_NAME.search(name))


def mask_env(env: dict[str, str]) -> dict[str, str]:
    return {k: (MASK if is_secret_name(k) and v else v) for k, v in env.items()}


def mask_argv(argv: list[str] | tuple[str, ...]) -> list[str]:
    """Mask values of flags such as ``--api-key X`` / ``--api-key=X``."""
    out: list[str] = []
    hide_next = False
    for a in argv:
        if hide_next:
            out.append(MASK)
            hide_next = False
            continue
        flag, eq, _ = a.partition("=")
        if flag in _SECRET_FLAGS or (flag.startswith("--") and is_secret_name(flag)):
            if eq:
                out.append(f"{flag}={MASK}")
            else:
                out.append(a)
                hide_next = True
            continue
        out.append(a)
    return out
