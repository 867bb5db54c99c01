"""The Cognito calls the sidecar makes at logout, against moto's server mode as the AWS stand-in.

At logout the sidecar revokes the refresh token at the Hosted UI's ``/oauth2/revoke`` (an OAuth
endpoint on the user pool domain, which moto does not serve: the dev provider stands in for it) and,
with ``oidc.global_sign_out``, calls the cognito-idp API ``GlobalSignOut``, unsigned, authorized by
the user's access token. That call goes here to moto, built by the sidecar's own client.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from typing import Any

import aiohttp
import boto3
import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer
from prometheus_client import CollectorRegistry

from sidecar.config import OidcSettings
from sidecar.errors import ProviderError
from sidecar.observability import Metrics
from sidecar.oidc.client import OidcClient, global_sign_out_request
from sidecar.oidc.discovery import cognito_metadata

# AWS finds the region of an unsigned call from the host (cognito-idp.{region}.amazonaws.com); moto's
# server, on 127.0.0.1, files every unsigned cognito-idp call under us-east-1, so the pool lives there.
REGION = "us-east-1"
PASSWORD = "Correct-horse-battery-9"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # moto's stand-ins


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def idp(moto_url: str) -> Any:
    return boto3.client("cognito-idp", region_name=REGION, endpoint_url=moto_url, **CREDENTIALS)


@dataclasses.dataclass(frozen=True)
class Pool:
    pool_id: str
    client_id: str


@pytest.fixture
def pool(idp: Any) -> Pool:
    """A pool and app client shaped like deploy/aws/cognito.yaml's, with two users."""
    pool_id = idp.create_user_pool(PoolName="authsidecar", UsernameAttributes=["email"])["UserPool"]["Id"]
    client = idp.create_user_pool_client(
        UserPoolId=pool_id, ClientName="authsidecar", GenerateSecret=False,
        AllowedOAuthFlowsUserPoolClient=True, AllowedOAuthFlows=["code"],
        AllowedOAuthScopes=["openid", "email", "profile", "aws.cognito.signin.user.admin"],
        CallbackURLs=["https://api.example.com/auth/callback"], LogoutURLs=["https://app.example.com/"],
        SupportedIdentityProviders=["COGNITO"], EnableTokenRevocation=True,
        # Only for this test's InitiateAuth; the sidecar signs users in through the Hosted UI.
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]
    for user in ("alice@example.com", "bob@example.com"):
        idp.admin_create_user(UserPoolId=pool_id, Username=user, MessageAction="SUPPRESS")
        idp.admin_set_user_password(UserPoolId=pool_id, Username=user, Password=PASSWORD, Permanent=True)
    return Pool(pool_id, client["ClientId"])


def _sign_in(idp: Any, pool: Pool, user: str) -> dict[str, str]:
    answer = idp.initiate_auth(ClientId=pool.client_id, AuthFlow="USER_PASSWORD_AUTH",
                               AuthParameters={"USERNAME": user, "PASSWORD": PASSWORD})
    return dict(answer["AuthenticationResult"])


def _refresh(idp: Any, pool: Pool, refresh_token: str) -> dict[str, Any]:
    return dict(idp.initiate_auth(ClientId=pool.client_id, AuthFlow="REFRESH_TOKEN_AUTH",
                                  AuthParameters={"REFRESH_TOKEN": refresh_token}))


def _settings(pool: Pool) -> OidcSettings:
    return OidcSettings(issuer=f"https://cognito-idp.{REGION}.amazonaws.com/{pool.pool_id}",
                        client_id=pool.client_id, cognito_domain="auth.example.com", global_sign_out=True,
                        scopes=("openid", "email", "profile", "aws.cognito.signin.user.admin"))


async def _global_sign_out(moto_url: str, pool: Pool, access_token: str) -> None:
    """The sidecar's OidcClient, its GlobalSignOut endpoint pointed from AWS to moto (same path)."""
    meta = cognito_metadata(_settings(pool))
    assert meta.global_sign_out_endpoint == f"https://cognito-idp.{REGION}.amazonaws.com/"
    meta = dataclasses.replace(meta, global_sign_out_endpoint=f"{moto_url}/")
    async with aiohttp.ClientSession() as session:
        client = OidcClient(session, meta, pool.client_id, None, 5.0, Metrics(CollectorRegistry()))
        await client.global_sign_out(access_token)


def test_the_sidecar_sends_global_sign_out_unsigned_as_the_aws_json_protocol(pool: Pool) -> None:
    request = global_sign_out_request(cognito_metadata(_settings(pool)), access_token="token")
    assert request is not None
    assert request.url == f"https://cognito-idp.{REGION}.amazonaws.com/"
    assert dict(request.headers) == {"Content-Type": "application/x-amz-json-1.1",
                                     "X-Amz-Target": "AWSCognitoIdentityProviderService.GlobalSignOut"}
    assert "Authorization" not in request.headers  # the access token authorizes the call itself


async def test_moto_accepts_the_sidecars_global_sign_out_and_ends_every_session_of_the_user(
    moto_url: str, idp: Any, pool: Pool
) -> None:
    laptop = _sign_in(idp, pool, "alice@example.com")
    phone = _sign_in(idp, pool, "alice@example.com")
    bob = _sign_in(idp, pool, "bob@example.com")
    assert idp.get_user(AccessToken=laptop["AccessToken"])["Username"]

    await _global_sign_out(moto_url, pool, laptop["AccessToken"])

    for tokens in (laptop, phone):
        with pytest.raises(ClientError) as refused:
            _refresh(idp, pool, tokens["RefreshToken"])
        assert refused.value.response["Error"]["Code"] == "NotAuthorizedException"
    with pytest.raises(ClientError) as refused:
        idp.get_user(AccessToken=laptop["AccessToken"])
    assert refused.value.response["Error"]["Code"] == "NotAuthorizedException"
    # Another user's session is untouched.
    assert _refresh(idp, pool, bob["RefreshToken"])["AuthenticationResult"]["AccessToken"]


async def test_a_refused_global_sign_out_is_a_provider_error_naming_only_the_aws_error_type(
    moto_url: str, idp: Any, pool: Pool
) -> None:
    tokens = _sign_in(idp, pool, "alice@example.com")
    await _global_sign_out(moto_url, pool, tokens["AccessToken"])
    with pytest.raises(ProviderError) as refused:
        await _global_sign_out(moto_url, pool, tokens["AccessToken"])
    reason = (refused.value.reason, refused.value.detail)
    assert reason == ("global_sign_out_http_400", "NotAuthorizedException")
    assert tokens["AccessToken"] not in str(refused.value)
