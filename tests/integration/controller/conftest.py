from loop_fixtures import human_dataset

__all__ = ["human_dataset"]
