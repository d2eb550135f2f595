"""zoo: faithful implementations of recent vision papers behind one registry.

    import zoo
    model = zoo.create_model("efficientad", variant="micro")
    result = model.predict("skimage:brick")
"""

import os

# PyTorch's OpenMP threads spin between calls by default, starving a server's own threads
# (measured on 2 cores: 3.4 vs 47.6 requests/s unbatched). Set before torch loads; a value
# the user already exported wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from zoo.registry import create_model, get_card, list_models, register_model  # noqa: E402

__all__ = ["create_model", "get_card", "list_models", "register_model"]
__version__ = "0.1.0"
