from loop_fixtures import human_dataset, tiny_base_model

__all__ = ["human_dataset", "tiny_base_model"]
