"""Rollout of a new student as a KServe InferenceService with canary traffic (`relkd rollout`)."""
