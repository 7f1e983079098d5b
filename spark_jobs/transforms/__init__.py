"""Pure transforms of the streaming jobs: ``DataFrame -> DataFrame``, built-in functions only.

Nothing here reads Kafka or writes anywhere, so every function works the same on a batch
DataFrame in a unit test and on a streaming one in a job.
"""
