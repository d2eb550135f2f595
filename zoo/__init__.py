"""zoo: faithful implementations of recent vision papers behind one registry.

    import zoo
    model = zoo.create_model("efficientad", variant="micro")
    result = model.predict("skimage:brick")
"""

from zoo.registry import create_model, get_card, list_models, register_model

__all__ = ["create_model", "get_card", "list_models", "register_model"]
__version__ = "0.1.0"
