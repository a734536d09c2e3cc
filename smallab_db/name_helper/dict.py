"""smallab 2.x's ``smallab.name_helper.dict``: names for ``get_name`` made from a specification."""

from __future__ import annotations

import json

from smallab_db.experiment import Specification
from smallab_db.specification import hash_canonical


def dict2name(dictionary: Specification) -> str:
    """Name a dict by its items in order, as 2.x did: ``{"seed": 1, "lr": 0.1}`` gives ``"seed-1_lr-0.1"``."""
    return "_".join(f"{key}-{value}" for key, value in dictionary.items())


def hash_dict(dictionary: Specification) -> str:
    """Name a dict by a decimal hash of its JSON text: the same in every process (2.x's changed with each one, so a
    run's name, and its checkpoints' folder, did not survive a restart)."""
    return str(int(hash_canonical(json.dumps(dictionary))[:15], 16))
