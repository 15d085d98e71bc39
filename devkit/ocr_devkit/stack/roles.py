"""Each function's IAM role, as SAM would create it, and the credentials the runner invokes it with.

SAM turns a function's `Policies` (inline statements, policy templates, managed-policy names and ARNs)
into an `AWS::IAM::Role`, and adds what its event sources and destinations need (the SQS poller's
managed policy, `sqs:SendMessage` on an OnFailure queue, X-Ray for `Tracing: Active`). Rather than
re-implementing those rules, the template is put through SAM's own translator (`cfn.sam_transform`), and
the roles it generates are resolved with the stack's parameters and physical names, created in moto,
and assumed by the runner: a function can do locally exactly what its deployed role lets it do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .cfn import FUNCTION_TYPES, NO_VALUE, ResolvedTemplate, TemplateError, sam_transform

_SESSION_SECONDS = 43200  # the longest STS allows; the local stack does not expire sessions anyway


@dataclass(frozen=True)
class RoleSpec:
    """A function's role with every intrinsic resolved: what moto is asked to create."""

    function: str
    logical_id: str
    role_name: str
    trust_policy: dict[str, Any]
    inline_policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    managed_policy_arns: tuple[str, ...] = ()

    def arn(self, account_id: str) -> str:
        return f"arn:aws:iam::{account_id}:role/{self.role_name}"


def function_roles(resolved: ResolvedTemplate, functions: list[str] | None = None) -> dict[str, RoleSpec]:
    """The role of each function (logical ids; default every function), resolved against the stack."""
    if functions is None:
        functions = [resource.logical_id for resource in resolved.of_type(*FUNCTION_TYPES)]
    translated = sam_transform(resolved.template, resolved.region)["Resources"]
    roles: dict[str, RoleSpec] = {}
    for function in functions:
        role_ref = (translated.get(function, {}).get("Properties") or {}).get("Role")
        role_id = _role_logical_id(role_ref)
        if role_id is None or role_id not in translated:
            raise TemplateError(f"{function}: its Role {role_ref!r} is not a role of this template")
        properties = translated[role_id].get("Properties") or {}
        here = f"{role_id} (SAM-generated role of {function})"
        policies = [p for p in _resolved_list(resolved, properties.get("Policies"), here) if p.get("PolicyDocument")]
        roles[function] = RoleSpec(
            function=function,
            logical_id=role_id,
            role_name=resolved.physical_name(role_id),
            trust_policy=resolved.resolve(properties.get("AssumeRolePolicyDocument"), path=here),
            inline_policies={str(p["PolicyName"]): p["PolicyDocument"] for p in policies},
            managed_policy_arns=tuple(
                str(arn) for arn in _resolved_list(resolved, properties.get("ManagedPolicyArns"), here)
            ),
        )
    return roles


def _role_logical_id(role_ref: Any) -> str | None:
    if isinstance(role_ref, dict) and "Fn::GetAtt" in role_ref:
        target = role_ref["Fn::GetAtt"]
        return str(target[0] if isinstance(target, list) else target.split(".")[0])
    return None


def _resolved_list(resolved: ResolvedTemplate, value: Any, here: str) -> list[Any]:
    return [item for item in (resolved.resolve(value or [], path=here) or []) if item is not NO_VALUE]


def _trusted_by_runner(trust_policy: dict[str, Any], runner_arn: str) -> dict[str, Any]:
    """The runner stands in for the Lambda service, so the role trusts it as it trusts lambda.amazonaws.com."""
    statements = []
    for statement in trust_policy.get("Statement", []):
        principal = dict(statement.get("Principal") or {})
        services = principal.get("Service")
        services = [services] if isinstance(services, str) else list(services or [])
        if "lambda.amazonaws.com" in services:
            principal["AWS"] = runner_arn
        statements.append({**statement, "Principal": principal})
    return {**trust_policy, "Statement": statements}


def create_roles(iam: Any, roles: dict[str, RoleSpec], runner_arn: str) -> dict[str, str]:
    """Create each role with its policies in moto; returns function → role ARN."""
    arns: dict[str, str] = {}
    for spec in roles.values():
        role = iam.create_role(
            RoleName=spec.role_name,
            AssumeRolePolicyDocument=json.dumps(_trusted_by_runner(spec.trust_policy, runner_arn)),
            MaxSessionDuration=_SESSION_SECONDS,
        )["Role"]
        for name, document in spec.inline_policies.items():
            # IAM reads a document without Version as 2008-10-17 (SAM's destination policies have none);
            # moto accepts only 2012-10-17, which means the same for statements without policy variables.
            document = {"Version": "2012-10-17", **document}
            iam.put_role_policy(RoleName=spec.role_name, PolicyName=name, PolicyDocument=json.dumps(document))
        for arn in spec.managed_policy_arns:
            iam.attach_role_policy(RoleName=spec.role_name, PolicyArn=arn)
        arns[spec.function] = str(role["Arn"])
    return arns


def assume(sts: Any, role_arn: str, function_name: str) -> dict[str, str]:
    """Temporary credentials for one function, as the environment variables Lambda sets."""
    credentials = sts.assume_role(
        RoleArn=role_arn, RoleSessionName=function_name[:64], DurationSeconds=_SESSION_SECONDS
    )["Credentials"]
    return {
        "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": credentials["SessionToken"],
    }
