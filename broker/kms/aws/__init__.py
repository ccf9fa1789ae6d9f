"""AWS KMS (`aws-kms://ARN-or-alias`); boto3 comes with the `keybroker[aws]` extra."""

from broker.kms.aws.backend import AwsKmsBackend
from broker.kms.aws.settings import AwsKmsSettings

__all__ = ["AwsKmsBackend", "AwsKmsSettings"]
