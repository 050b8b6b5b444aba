"""The platform's contracts in Python: what services and training both read and write.

Torch-free on purpose (the student-inference image imports it without torch):
the dataset schema and product text rendering, Kafka topics and their payload
helpers, the student/teacher artifact specs and model identity. The gRPC and topic
messages themselves are generated from `proto/relevance/v1`.
"""
