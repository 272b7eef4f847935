"""The one loader of torch files from disk: tensors and plain data only, never code.

Every ``torch.load`` of nlbench goes through :func:`load_tensors` (``weights_only=True``): a
checkpoint copied from a colleague, a shared filesystem or the internet is data, and a pickle
that asks to call anything is refused. Callers turn :class:`UnreadableFile` into a message that
says what to do; torch's own advice (to disable the safety check) is never passed on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class UnreadableFile(Exception):
    """A file that cannot be loaded safely; ``str()`` is a short reason for a message."""


def load_tensors(path: Path) -> Any:
    """The content of a torch file, loaded with ``weights_only=True`` on the CPU."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError) as err:
        text = str(err)
        if "weights_only" in text or "Unsupported global" in text or "Weights only load failed" in text:
            raise UnreadableFile("it holds objects other than tensors and plain data, which nlbench never loads") \
                from None
        first = text.splitlines()[0] if text else type(err).__name__
        raise UnreadableFile(f"it is damaged or not a torch file: {first[:160]}") from None
