"""What the control-plane tests share about a rendered stack created without Nova or Glance."""

from __future__ import annotations

from infra import hot

# What the Pulumi program passes for the parameters it fills at deploy time (image lookup,
# security group, credential).
PARAMETERS = {
    hot.P_IMAGE: "consumer-template",
    hot.P_SECURITY_GROUP: "queue-workers-sg",
    hot.P_CREDENTIALS_ENV: "T1NfQVVUSF9UWVBFPW5vbmUK",  # base64 of an env file; hidden in Heat
    hot.P_TEMPLATE_PROPERTIES: {"qw_template_name": "queue-workers-consumer", "qw_template_version": "1"},
    hot.P_TEMPLATE_LABEL: "queue-workers-consumer-v1 abababababab",
}
