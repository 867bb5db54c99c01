"""A tiny CloudFormation evaluator for the templates in deploy/aws: parameters (with their defaults),
conditions, and the intrinsic functions the templates use, resolved over example parameter values
and made-up physical ids / attributes for the resources. Enough to read what a stack would hand the
sidecar; not a model of CloudFormation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml

ACCOUNT = "123456789012"
REGION = "eu-west-1"
_NO_VALUE = object()
_SUB = re.compile(r"\$\{([^}!]+)\}")


def load_template(path: Path) -> dict[str, Any]:
    """The template with short forms (``!Ref``, ``!Sub``) in their long form (``Ref``, ``Fn::Sub``)."""
    return dict(cfn_yaml.loads(path.read_text(encoding="utf-8"), str(path)))


def _fake_ref(logical_id: str, kind: str, stack: str) -> str:
    """A plausible physical id for ``Ref`` of a resource of type ``kind``."""
    arn = f"arn:aws:{{}}:{REGION}:{ACCOUNT}:{{}}"
    fakes = {
        "AWS::Cognito::UserPool": f"{REGION}_Ex4mple",
        "AWS::Cognito::UserPoolClient": "1example23456789abcdefghij",
        "AWS::SecretsManager::Secret": arn.format("secretsmanager", f"secret:{stack}/{logical_id}-AbCdEf"),
        "AWS::ElasticLoadBalancingV2::Listener":
            arn.format("elasticloadbalancing", f"listener/app/{stack}/50dc6c495c0c9188/f2f7dc8efc522ab2"),
        "AWS::ElasticLoadBalancingV2::TargetGroup":
            arn.format("elasticloadbalancing", f"targetgroup/{logical_id}/73e2d6bc24d8a067"),
    }
    return fakes.get(kind, f"{stack}-{logical_id}-1A2B3C")


@dataclass
class Stack:
    template: Mapping[str, Any]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    name: str = "example"
    # Exports of other stacks, for Fn::ImportValue.
    exports: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        declared = self.template.get("Parameters", {})
        unknown = set(self.parameters) - set(declared)
        assert not unknown, f"not parameters of the template: {unknown}"
        self.params: dict[str, Any] = {}
        for key, spec in declared.items():
            value = self.parameters.get(key, spec.get("Default"))
            assert value is not None, f"parameter {key} needs a value"
            if spec["Type"] == "CommaDelimitedList" or spec["Type"].startswith("List<"):
                value = value.split(",") if isinstance(value, str) else list(value)
            else:
                value = str(value)
                allowed = [str(v) for v in spec.get("AllowedValues", [])]
                assert not allowed or value in allowed, f"{key}={value!r} not in {allowed}"
                pattern = spec.get("AllowedPattern")
                assert pattern is None or re.fullmatch(pattern, value), f"{key}={value!r} !~ {pattern}"
            self.params[key] = value
        self._conditions: dict[str, bool] = {}

    # -- conditions ---------------------------------------------------------------------------------

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            self._conditions[name] = bool(self._evaluate(self.template["Conditions"][name]))
        return self._conditions[name]

    def _evaluate(self, expr: Any) -> Any:
        if isinstance(expr, dict) and len(expr) == 1:
            (fn, arg), = expr.items()
            if fn == "Condition":
                return self.condition(arg)
            if fn == "Fn::Equals":
                return self.resolve(arg[0]) == self.resolve(arg[1])
            if fn == "Fn::Not":
                return not self._evaluate(arg[0])
            if fn == "Fn::And":
                return all(self._evaluate(a) for a in arg)
            if fn == "Fn::Or":
                return any(self._evaluate(a) for a in arg)
        return self.resolve(expr)

    def rule_failures(self) -> list[str]:
        """AssertDescriptions of the template's Rules that these parameters break."""
        failures = []
        for rule in self.template.get("Rules", {}).values():
            if "RuleCondition" in rule and not self._evaluate(rule["RuleCondition"]):
                continue
            broken = [a for a in rule["Assertions"] if not self._evaluate(a["Assert"])]
            failures += [a["AssertDescription"] for a in broken]
        return failures

    # -- values --------------------------------------------------------------------------------------------

    def _ref(self, name: str) -> Any:
        pseudo = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::StackName": self.name,
                  "AWS::Partition": "aws", "AWS::NoValue": _NO_VALUE}
        if name in pseudo:
            return pseudo[name]
        if name in self.params:
            return self.params[name]
        resource = self.template["Resources"][name]
        assert self.created(name), f"Ref to {name}, which these parameters do not create"
        if resource["Type"] == "AWS::Logs::LogGroup":
            return self.resolve(resource["Properties"]["LogGroupName"])
        return _fake_ref(name, resource["Type"], self.name)

    def _get_att(self, name: str, attribute: str) -> str:
        assert self.created(name), f"GetAtt of {name}, which these parameters do not create"
        kind = self.template["Resources"][name]["Type"]
        if attribute == "Arn" and kind == "AWS::IAM::Role":
            return f"arn:aws:iam::{ACCOUNT}:role/{self.name}-{name}-1A2B3C"
        if attribute == "Arn" and kind == "AWS::Logs::LogGroup":
            return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{self._ref(name)}:*"
        if (kind, attribute) == ("AWS::Cognito::UserPoolClient", "ClientSecret"):
            return "example-generated-client-secret"
        return f"{name}.{attribute}"

    def _sub(self, text: str, variables: Mapping[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            name = match[1]
            if name in variables:
                return str(self.resolve(variables[name]))
            if "." in name and name.split(".", 1)[0] in self.template["Resources"]:
                return self._get_att(*name.split(".", 1))
            return str(self._ref(name))

        return _SUB.sub(one, text)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            out = [self.resolve(v) for v in value]
            return [v for v in out if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (fn, arg), = value.items()
            if fn == "Ref":
                return self._ref(arg)
            if fn == "Fn::GetAtt":
                name, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
                return self._get_att(name, attribute)
            if fn == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else arg
                return self._sub(text, variables)
            if fn == "Fn::If":
                return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
            if fn == "Fn::Join":
                return arg[0].join(str(v) for v in self.resolve(arg[1]))
            if fn == "Fn::ImportValue":
                return self.exports[self.resolve(arg)]
            assert not fn.startswith("Fn::"), f"{fn} is not known to this evaluator"
        out = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not _NO_VALUE}

    # -- the stack -------------------------------------------------------------------------------------

    def created(self, name: str) -> bool:
        condition = self.template["Resources"][name].get("Condition")
        return condition is None or self.condition(condition)

    def resources(self, kind: str | None = None) -> dict[str, dict[str, Any]]:
        """Resolved Properties of every resource these parameters create (of one type, if given)."""
        return {
            name: self.resolve(resource.get("Properties", {}))
            for name, resource in self.template["Resources"].items()
            if self.created(name) and kind in (None, resource["Type"])
        }

    def resource(self, name: str) -> dict[str, Any]:
        assert self.created(name), name
        return dict(self.resolve(self.template["Resources"][name].get("Properties", {})))

    def outputs(self) -> dict[str, dict[str, Any]]:
        """Every output these parameters create: Description, Value and the export name."""
        out = {}
        for name, spec in self.template.get("Outputs", {}).items():
            if "Condition" in spec and not self.condition(spec["Condition"]):
                continue
            out[name] = {"Description": spec.get("Description", ""), "Value": self.resolve(spec["Value"]),
                         "Export": self.resolve(spec["Export"]["Name"]) if "Export" in spec else None}
        return out
