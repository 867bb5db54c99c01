"""deploy/aws: CloudFormation that cfn-lint passes, whose Outputs are authsidecar configuration, and
whose task definition is deploy/ecs's, checked against botocore's ECS model. Offline: the templates are
evaluated over example parameters (tests/deploy/_cfn.py), nothing is deployed."""

from __future__ import annotations

import inspect
import json
import os
import re
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.model import Shape
from botocore.validate import ParamValidator
from cfnlint.api import ManualArgs, lint_file

from sidecar import cli
from sidecar.auth.refresh import SingleFlight
from sidecar.config import Settings
from sidecar.config_checks import COGNITO_ADMIN_SCOPE
from sidecar.config_load import ENV_PREFIX, parse_settings

from ._cfn import REGION, Stack, load_template
from ._ecs import SECRET_ARN, enum_errors
from ._support import CLIENT_SECRET, COOKIE_SECRET, ECS_TASK, EXAMPLE, REPO, config_key_for_env

AWS = REPO / "deploy" / "aws"
TEMPLATES = sorted(AWS.glob("*.yaml"))
COGNITO = load_template(AWS / "cognito.yaml")
SERVICE = load_template(AWS / "service.yaml")
ECS_MODEL = botocore.session.get_session().get_service_model("ecs")
REGISTER = ECS_MODEL.operation_model("RegisterTaskDefinition").input_shape
ECS_JSON: dict[str, Any] = json.loads(ECS_TASK.read_text(encoding="utf-8"))

COGNITO_BASE = {"AppOrigin": "https://app.example.com", "ApiDomainName": "api.example.com",
                "DomainPrefix": "example-auth"}
COGNITO_CASES = [
    pytest.param({}, id="public-pkce-client"),
    pytest.param({"ClientType": "confidential", "GlobalSignOut": "true", "RefreshTokenRotation": "true",
                  "RefreshTokenRetryGracePeriodSeconds": 15}, id="confidential-global-sign-out-rotation"),
    pytest.param({"ExistingUserPoolId": "eu-west-1_AbC123", "CreateDomain": "false"},
                 id="existing-pool-and-its-domain"),
    pytest.param({"ManagedLoginVersion": 2, "UserPoolTier": "PLUS"}, id="managed-login"),
]
SERVICE_BASE = {
    "CognitoStackName": "auth", "VpcId": "vpc-0abc1234", "PrivateSubnetIds": "subnet-0aaa,subnet-0bbb",
    "PrivateSubnetCidrs": "10.0.10.0/24,10.0.11.0/24", "ApiDomainName": "api.example.com",
    "ApiCertificateArn":
        "arn:aws:acm:eu-west-1:123456789012:certificate/0a1b2c3d-1111-2222-3333-0123456789ab",
    "AppImage": "ghcr.io/example/app:1.0.0", "SidecarImage": "ghcr.io/example/authsidecar:0.1.0",
}
SERVICE_CASES = [
    pytest.param({}, {}, id="public-client-sidecar-cors-generated-cookie-secret"),
    pytest.param({"ClientType": "confidential", "GlobalSignOut": "true"},
                 {"ClientType": "confidential",
                  "CookieSecretArn": "arn:aws:ssm:eu-west-1:123456789012:parameter/app/authsidecar/cookie"},
                 id="confidential-client-ssm-cookie-secret"),
    pytest.param({}, {"GatewayCors": "true", "AppOrigin": "https://app.example.com"}, id="gateway-cors"),
]
# What the ECS agent puts in the environment for each `Secrets` entry.
SECRET_VALUES = {
    "AUTHSIDECAR_OIDC__CLIENT_SECRET": CLIENT_SECRET,
    "AUTHSIDECAR_COOKIES__SECRET": COOKIE_SECRET,
}


def cognito(**changes: Any) -> Stack:
    return Stack(COGNITO, {**COGNITO_BASE, **changes}, name="auth")


def service(cognito_stack: Stack, **changes: Any) -> Stack:
    exports = {o["Export"]: o["Value"] for o in cognito_stack.outputs().values()}
    return Stack(SERVICE, {**SERVICE_BASE, **changes}, name="app", exports=exports)


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper().replace(".", "__")


def output_key(output: dict[str, Any]) -> str:
    """The config key an Output stands for: the start of its Description, up to the colon."""
    return str(output["Description"]).split(":", 1)[0]


def sidecar_container(stack: Stack) -> dict[str, Any]:
    containers = stack.resource("TaskDefinition")["ContainerDefinitions"]
    return next(c for c in containers if c["Name"] == "authsidecar")


def sidecar_environ(stack: Stack) -> dict[str, str]:
    container = sidecar_container(stack)
    environ = {e["Name"]: e["Value"] for e in container["Environment"]}
    environ.update({s["Name"]: SECRET_VALUES[s["Name"]] for s in container["Secrets"]})
    return environ


def check_config(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    code = cli.main(["check-config"])
    out, err = capsys.readouterr()
    return code, out, err


def to_api(value: Any, shape: Shape, where: str = "") -> Any:
    """A CloudFormation property value in the API's spelling (ContainerDefinitions -> containerDefinitions),
    walking the botocore shape; a property the API does not have fails."""
    if shape.type_name == "structure":
        members = {name.lower(): name for name in shape.members}
        out = {}
        for key, item in value.items():
            name = members.get(key.lower())
            assert name is not None, f"{where}.{key} is not a member of {shape.name}"
            out[name] = to_api(item, shape.members[name], f"{where}.{key}")
        return out
    if shape.type_name == "list":
        return [to_api(item, shape.member, f"{where}[{i}]") for i, item in enumerate(value)]
    if shape.type_name == "map":
        return {key: to_api(item, shape.value, f"{where}.{key}") for key, item in value.items()}
    if shape.type_name == "integer":
        return int(value)
    return value


def register_request(stack: Stack) -> dict[str, Any]:
    return dict(to_api(stack.resource("TaskDefinition"), REGISTER, "TaskDefinition"))


# --- cfn-lint ------------------------------------------------------------------------------------------


def test_every_template_is_linted() -> None:
    assert [t.name for t in TEMPLATES] == ["cognito.yaml", "service.yaml"]


@pytest.mark.parametrize("template", TEMPLATES, ids=[t.name for t in TEMPLATES])
def test_cfn_lint_finds_no_error_and_no_warning(template: Path) -> None:
    matches = lint_file(template, config=ManualArgs(regions=[REGION, "us-east-1"]))
    assert [f"{m.rule.id} {m.message} (line {m.linenumber})" for m in matches] == []


@pytest.mark.parametrize("template", TEMPLATES, ids=[t.name for t in TEMPLATES])
def test_every_lint_exception_in_a_template_says_why(template: Path) -> None:
    lines = template.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if re.fullmatch(r"\s*- [EWI]\d{4}\s*", line):
            assert lines[number - 1].strip().startswith("#"), f"{template.name}:{number + 1} without a reason"


# --- the Cognito stack ---------------------------------------------------------------------------------


@pytest.mark.parametrize("changes", COGNITO_CASES)
def test_each_cognito_output_is_one_config_key_exported_under_its_name(changes: dict[str, Any]) -> None:
    outputs = cognito(**changes).outputs()
    keys = [output_key(o) for o in outputs.values()]
    assert len(keys) == len(set(keys))
    for name, output in outputs.items():
        key = output_key(output)
        assert config_key_for_env(env_name(key)) == key
        assert output["Export"] == f"auth-{name}"


@pytest.mark.parametrize("changes", COGNITO_CASES)
def test_the_cognito_outputs_make_a_configuration_check_config_accepts(
    changes: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = cognito(**changes).outputs()
    environ = {env_name(output_key(o)): o["Value"] for o in outputs.values()}
    if "AUTHSIDECAR_OIDC__CLIENT_SECRET" in environ:  # an ARN: the task's Secrets resolve it
        assert SECRET_ARN.match(environ["AUTHSIDECAR_OIDC__CLIENT_SECRET"])
        environ["AUTHSIDECAR_OIDC__CLIENT_SECRET"] = CLIENT_SECRET
    environ["AUTHSIDECAR_COOKIES__SECRET"] = COOKIE_SECRET
    code, out, err = check_config(environ, monkeypatch, capsys)
    assert (code, err) == (0, "")
    printed = json.loads(out)
    assert printed["oidc"]["issuer"] == outputs["OidcIssuer"]["Value"]
    assert printed["oidc"]["client_id"] == outputs["OidcClientId"]["Value"]
    assert printed["callback_url"] == outputs["CallbackUrl"]["Value"]
    assert CLIENT_SECRET not in out


@pytest.mark.parametrize("changes", COGNITO_CASES)
def test_the_outputs_say_what_the_app_client_was_given(changes: dict[str, Any]) -> None:
    stack = cognito(**changes)
    client, outputs = stack.resource("AppClient"), stack.outputs()
    settings = parse_settings({}, {env_name(output_key(o)): o["Value"] for o in outputs.values()
                                   if output_key(o) != "oidc.client_secret"}
                              | {"AUTHSIDECAR_COOKIES__SECRET": COOKIE_SECRET})
    assert client["CallbackURLs"] == [settings.callback_url]
    assert client["LogoutURLs"] == [settings.app_url]
    assert client["AllowedOAuthScopes"] == list(settings.oidc.scopes)
    assert settings.oidc.issuer.rsplit("/", 1)[1] == client["UserPoolId"]
    assert settings.oidc.issuer.startswith(f"https://cognito-idp.{REGION}.amazonaws.com/")
    assert settings.oidc.cognito_domain == f"example-auth.auth.{REGION}.amazoncognito.com"
    if stack.created("UserPoolDomain"):
        assert stack.resource("UserPoolDomain")["Domain"] == "example-auth"
    assert settings.oidc.is_cognito


@pytest.mark.parametrize("changes", COGNITO_CASES)
def test_the_app_client_is_the_checklists(changes: dict[str, Any]) -> None:
    client = cognito(**changes).resource("AppClient")
    assert client["AllowedOAuthFlowsUserPoolClient"] is True
    assert client["AllowedOAuthFlows"] == ["code"]  # no implicit, no client_credentials
    assert client["SupportedIdentityProviders"] == ["COGNITO"]
    assert client["EnableTokenRevocation"] is True
    assert client["CallbackURLs"] == ["https://api.example.com/auth/callback"]
    assert client["LogoutURLs"] == ["https://app.example.com/"]
    assert client["GenerateSecret"] is (changes.get("ClientType") == "confidential")
    assert {"openid", "email", "profile"} <= set(client["AllowedOAuthScopes"])
    units = client["TokenValidityUnits"]
    assert (units["AccessToken"], units["IdToken"]) == ("minutes", "minutes")
    assert int(client["AccessTokenValidity"]) <= 60
    assert int(client["IdTokenValidity"]) <= 60


@pytest.mark.parametrize(("value", "with_admin"), [("true", True), ("false", False)], ids=["on", "off"])
def test_the_global_sign_out_parameter_sets_the_admin_scope_in_client_and_config(
    value: str, with_admin: bool
) -> None:
    stack = cognito(GlobalSignOut=value)
    outputs = stack.outputs()
    assert (COGNITO_ADMIN_SCOPE in stack.resource("AppClient")["AllowedOAuthScopes"]) is with_admin
    assert (COGNITO_ADMIN_SCOPE in outputs["OidcScopes"]["Value"]) is with_admin
    assert outputs["OidcGlobalSignOut"]["Value"] == value


def test_refresh_token_rotation_is_set_by_parameter_with_its_grace_period() -> None:
    stack = cognito(RefreshTokenRotation="true", RefreshTokenRetryGracePeriodSeconds=15)
    rotating = stack.resource("AppClient")
    assert rotating["RefreshTokenRotation"] == {"Feature": "ENABLED", "RetryGracePeriodSeconds": "15"}
    # Cognito refuses REFRESH_TOKEN_AUTH on a rotating client; the sidecar uses /oauth2/token anyway.
    assert "ALLOW_REFRESH_TOKEN_AUTH" not in rotating["ExplicitAuthFlows"]
    assert "RefreshTokenRotation" not in cognito().resource("AppClient")


def test_the_default_grace_period_covers_the_refresh_linger_window() -> None:
    # A request still carrying the rotated-out refresh token reaches another process within the linger
    # window; Cognito must still accept that token then (README, Deploy on AWS).
    linger = inspect.signature(SingleFlight.__init__).parameters["linger"].default
    assert int(COGNITO["Parameters"]["RefreshTokenRetryGracePeriodSeconds"]["Default"]) >= linger


@pytest.mark.parametrize(
    ("stack", "changes", "refusal"),
    [
        pytest.param(COGNITO, {**COGNITO_BASE, "RefreshTokenRotation": "true", "UserPoolTier": "LITE"},
                     "refresh-token rotation needs the ESSENTIALS or PLUS feature plan",
                     id="rotation-on-lite"),
        pytest.param(COGNITO, {**COGNITO_BASE, "CreateDomain": "false"},
                     "a new user pool has no domain yet; CreateDomain false needs ExistingUserPoolId",
                     id="no-domain-for-a-new-pool"),
        pytest.param(SERVICE, {**SERVICE_BASE, "GatewayCors": "true"}, "GatewayCors true needs AppOrigin",
                     id="gateway-cors-without-origin"),
    ],
)
def test_the_templates_rules_refuse_what_cannot_work(
    stack: dict[str, Any], changes: dict[str, Any], refusal: str
) -> None:
    assert Stack(stack, changes).rule_failures() == [refusal]


@pytest.mark.parametrize("changes", COGNITO_CASES)
def test_the_example_parameters_pass_the_rules(changes: dict[str, Any]) -> None:
    assert cognito(**changes).rule_failures() == []


# --- the service stack -------------------------------------------------------------------------------


@pytest.mark.parametrize(("cognito_changes", "service_changes"), SERVICE_CASES)
def test_the_sidecar_gets_each_cognito_output_in_its_config_key(
    cognito_changes: dict[str, Any], service_changes: dict[str, Any]
) -> None:
    auth = cognito(**cognito_changes)
    stack = service(auth, **service_changes)
    container = sidecar_container(stack)
    environment = {e["Name"]: e["Value"] for e in container["Environment"]}
    secrets = {s["Name"]: s["ValueFrom"] for s in container["Secrets"]}
    gateway_cors = service_changes.get("GatewayCors") == "true"
    for output in auth.outputs().values():
        name = env_name(output_key(output))
        if name == "AUTHSIDECAR_OIDC__CLIENT_SECRET":
            assert secrets[name] == output["Value"]
        elif name == "AUTHSIDECAR_CORS__ALLOWED_ORIGINS" and gateway_cors:
            assert environment[name] == "[]"
        else:
            assert environment[name] == output["Value"], name


@pytest.mark.parametrize(("cognito_changes", "service_changes"), SERVICE_CASES)
def test_check_config_accepts_the_sidecars_environment(
    cognito_changes: dict[str, Any], service_changes: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    stack = service(cognito(**cognito_changes), **service_changes)
    assert stack.rule_failures() == []
    code, out, err = check_config(sidecar_environ(stack), monkeypatch, capsys)
    assert (code, err) == (0, "")
    assert COOKIE_SECRET not in out
    assert json.loads(out)["trusted_proxies"] == ["10.0.10.0/24", "10.0.11.0/24"]


def _settings(stack: Stack) -> Settings:
    return parse_settings({}, sidecar_environ(stack))


@pytest.mark.parametrize(("cognito_changes", "service_changes"), SERVICE_CASES)
def test_the_task_definition_is_a_valid_register_task_definition_request(
    cognito_changes: dict[str, Any], service_changes: dict[str, Any]
) -> None:
    request = register_request(service(cognito(**cognito_changes), **service_changes))
    report = ParamValidator().validate(request, REGISTER)
    assert not report.has_errors(), report.generate_report()
    assert enum_errors(request, REGISTER, "task") == []


def _without_placeholders(container: dict[str, Any]) -> dict[str, Any]:
    """A container definition less what deploy/ecs leaves as placeholders and a stack fills in."""
    out = {k: v for k, v in container.items() if k not in ("image", "environment", "secrets")}
    options = {k: v for k, v in container["logConfiguration"]["options"].items()
               if k not in ("awslogs-group", "awslogs-region")}
    out["logConfiguration"] = {**container["logConfiguration"], "options": options}
    return out


def test_the_containers_are_those_of_deploy_ecs() -> None:
    request = register_request(service(cognito()))
    ours = {c["name"]: c for c in request["containerDefinitions"]}
    theirs = {c["name"]: c for c in ECS_JSON["containerDefinitions"]}
    assert ours.keys() == theirs.keys()
    for name in theirs:
        assert _without_placeholders(ours[name]) == _without_placeholders(theirs[name]), name
        names = {e["name"] for e in ours[name]["environment"]}
        assert {e["name"] for e in theirs[name]["environment"]} <= names
    assert ({s["name"] for s in ours["authsidecar"]["secrets"]}
            <= {s["name"] for s in theirs["authsidecar"]["secrets"]})
    task = {k: v for k, v in request.items() if k not in ("containerDefinitions", "family")}
    assert task.keys() == {k for k in ECS_JSON if k not in ("containerDefinitions", "family")}
    for key in ("networkMode", "requiresCompatibilities", "runtimePlatform", "cpu", "memory"):
        assert task[key] == ECS_JSON[key], key


def test_traffic_waits_for_readyz_on_the_admin_port_and_goes_to_the_listen_port() -> None:
    stack = service(cognito())
    settings = _settings(stack)
    group = stack.resource("TargetGroup")
    assert (group["TargetType"], group["Protocol"], group["Port"]) == ("ip", "HTTP", settings.listen.port)
    assert (group["HealthCheckPort"], group["HealthCheckPath"]) == (str(settings.admin.port), "/readyz")
    assert group["Matcher"] == {"HttpCode": "200"}
    assert stack.resource("Service")["LoadBalancers"] == [
        {"ContainerName": "authsidecar", "ContainerPort": settings.listen.port,
         "TargetGroupArn": stack.resolve({"Ref": "TargetGroup"})}]
    assert (settings.listen.port, settings.admin.port) == (EXAMPLE.listen.port, EXAMPLE.admin.port)


def test_security_groups_admit_only_gateway_to_balancer_to_task() -> None:
    stack = service(cognito())
    ref = {name: stack.resolve({"Ref": name})
           for name in ("VpcLinkSecurityGroup", "LoadBalancerSecurityGroup", "TaskSecurityGroup")}
    ingress = {(r["GroupId"], r["FromPort"], r["ToPort"], r["SourceSecurityGroupId"])
               for r in stack.resources("AWS::EC2::SecurityGroupIngress").values()}
    assert ingress == {
        (ref["LoadBalancerSecurityGroup"], 80, 80, ref["VpcLinkSecurityGroup"]),
        (ref["TaskSecurityGroup"], 8080, 8080, ref["LoadBalancerSecurityGroup"]),
        (ref["TaskSecurityGroup"], 9464, 9464, ref["LoadBalancerSecurityGroup"]),
    }
    for group in stack.resources("AWS::EC2::SecurityGroup").values():
        assert "SecurityGroupIngress" not in group
    assert stack.resource("LoadBalancer")["Scheme"] == "internal"
    network = stack.resource("Service")["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "DISABLED"


def test_api_gateway_proxies_every_path_with_headers_untouched() -> None:
    stack = service(cognito())
    api, route, stage = stack.resource("HttpApi"), stack.resource("DefaultRoute"), stack.resource("Stage")
    integration = stack.resource("Integration")
    assert api["ProtocolType"] == "HTTP"
    assert api["DisableExecuteApiEndpoint"] is True  # only the domain the cookies and callback_url are on
    assert route["RouteKey"] == "$default"
    assert route["Target"] == f"integrations/{stack.resolve({'Ref': 'Integration'})}"
    assert (integration["IntegrationType"], integration["IntegrationMethod"]) == ("HTTP_PROXY", "ANY")
    assert (integration["ConnectionType"], integration["PayloadFormatVersion"]) == ("VPC_LINK", "1.0")
    assert integration["IntegrationUri"] == stack.resolve({"Ref": "Listener"})
    # No parameter mapping: Cookie in and every Set-Cookie out pass as they are.
    assert "RequestParameters" not in integration
    assert "ResponseParameters" not in integration
    assert (stage["StageName"], stage["AutoDeploy"]) == ("$default", True)
    assert stack.resource("ApiMapping")["Stage"] == stack.resolve({"Ref": "Stage"})


def test_the_sidecar_answers_before_api_gateway_gives_up_and_the_balancer_waits_longer() -> None:
    stack = service(cognito())
    read_timeout = _settings(stack).upstream.read_timeout
    assert read_timeout * 1000 < int(stack.resource("Integration")["TimeoutInMillis"]) <= 30_000
    attributes = {a["Key"]: a["Value"] for a in stack.resource("LoadBalancer")["LoadBalancerAttributes"]}
    assert int(attributes["idle_timeout.timeout_seconds"]) > 30


@pytest.mark.parametrize("gateway_cors", ["false", "true"])
def test_cors_is_answered_in_exactly_one_place(gateway_cors: str) -> None:
    stack = service(cognito(), GatewayCors=gateway_cors, AppOrigin="https://app.example.com")
    gateway = stack.resource("HttpApi").get("CorsConfiguration")
    sidecar = _settings(stack).cors.allowed_origins
    assert (gateway is not None) != bool(sidecar)
    if gateway is not None:
        assert gateway["AllowOrigins"] == ["https://app.example.com"]
        assert gateway["AllowCredentials"] is True
    else:
        assert sidecar == ("https://app.example.com",)


@pytest.mark.parametrize(("cognito_changes", "service_changes"), SERVICE_CASES)
def test_secrets_come_from_secrets_manager_or_ssm_and_the_execution_role_reads_exactly_them(
    cognito_changes: dict[str, Any], service_changes: dict[str, Any]
) -> None:
    stack = service(cognito(**cognito_changes), **service_changes)
    container = sidecar_container(stack)
    arns = {s["ValueFrom"] for s in container["Secrets"]}
    assert all(SECRET_ARN.match(arn) for arn in arns), arns
    assert not [e for e in container["Environment"] if "SECRET" in e["Name"]]
    (policy,) = stack.resource("ExecutionRole")["Policies"]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert set(statement["Resource"]) == arns
    assert set(statement["Action"]) == {"secretsmanager:GetSecretValue", "ssm:GetParameters"}
    assert "Policies" not in stack.resource("TaskRole")


def test_each_container_and_the_api_log_to_the_stacks_log_groups() -> None:
    stack = service(cognito())
    groups = stack.resources("AWS::Logs::LogGroup")
    for container in stack.resource("TaskDefinition")["ContainerDefinitions"]:
        options = container["LogConfiguration"]["Options"]
        assert options["awslogs-group"] == groups["LogGroup"]["LogGroupName"]
        assert (options["awslogs-region"], options["awslogs-stream-prefix"]) == (REGION, container["Name"])
    assert stack.resource("Stage")["AccessLogSettings"]["DestinationArn"] == stack.resolve(
        {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]})
    assert all(int(g["RetentionInDays"]) > 0 for g in groups.values())
