"""authsidecar: an OIDC / AWS Cognito auth proxy that runs beside any backend."""

__version__ = "0.1.0"
