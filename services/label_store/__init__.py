"""The label store: teacher labels from Kafka into versioned Parquet snapshots."""
