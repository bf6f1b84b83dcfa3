"""The error every sample-bucket input problem raises."""


class SampleBucketError(ValueError):
    """A sample-bucket input is wrong; the message names it, says what is wrong and how to fix it."""
