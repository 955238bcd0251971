"""Turns the auth table of a REST source's config into an httpx ``Auth`` from the seam."""

from __future__ import annotations

import httpx

from connectors.http import ApiKeyAuth, BearerAuth, OAuth2ClientCredentials
from connectors.rest.config import (
    ApiKeyAuthConfig,
    AuthConfig,
    BasicAuthConfig,
    BearerAuthConfig,
    OAuth2AuthConfig,
)


def build_auth(config: AuthConfig) -> httpx.Auth | None:
    match config:
        case ApiKeyAuthConfig():
            return ApiKeyAuth(
                config.key.get_secret_value(),
                header=config.header,
                prefix=config.prefix,
                query=config.query,
            )
        case BearerAuthConfig():
            return BearerAuth(config.token.get_secret_value())
        case BasicAuthConfig():
            return httpx.BasicAuth(
                config.username.get_secret_value(), config.password.get_secret_value()
            )
        case OAuth2AuthConfig():
            return OAuth2ClientCredentials(
                config.token_url,
                config.client_id,
                config.client_secret.get_secret_value(),
                scope=config.scope,
                credentials_in_body=config.credentials_in_body,
            )
        case _:
            return None


def secrets_of(config: AuthConfig) -> list[str]:
    """Every secret value in the auth table, for the seam's redactor."""
    match config:
        case ApiKeyAuthConfig():
            return [config.key.get_secret_value()]
        case BearerAuthConfig():
            return [config.token.get_secret_value()]
        case BasicAuthConfig():
            return [config.username.get_secret_value(), config.password.get_secret_value()]
        case OAuth2AuthConfig():
            return [config.client_secret.get_secret_value()]
        case _:
            return []
