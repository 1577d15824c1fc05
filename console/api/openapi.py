"""The OpenAPI 3.1 description of the runtime API, served at /api/v1/openapi.json.

Only endpoints that exist are described. The OFREP paths and schemas follow
open-feature/protocol `service/openapi.yaml`; Airlock adds its config snapshot, the bucketing
rule in prose, and the optional environment/application assertion headers.
"""

from __future__ import annotations

from typing import Any

from console.flags.evaluation import OPERATORS
from console.samples import services as sample_services

REF = "#/components/schemas/"


def _ref(name: str) -> dict:
    return {"$ref": REF + name}


def _json_content(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


AUTH_RESPONSES = {
    "401": {
        "description": "No API key, or an unknown or revoked one",
        "content": _json_content(_ref("apiError")),
    },
    "403": {
        "description": "The key lacks the scope, or belongs to another environment/application "
        "than the one named in X-Airlock-Environment / X-Airlock-Application",
        "content": _json_content(_ref("apiError")),
    },
    "429": {
        "description": "The key's rate limit (requests per minute) is reached",
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before the next request",
                "schema": {"type": "string", "examples": ["17"]},
            }
        },
        "content": _json_content(_ref("apiError")),
    },
}

ASSERTION_HEADERS = [
    {
        "in": "header",
        "name": "X-Airlock-Environment",
        "required": False,
        "description": "Optional: the environment key the client expects its key to belong to; "
        "a mismatch is refused with 403 and no data.",
        "schema": {"type": "string"},
    },
    {
        "in": "header",
        "name": "X-Airlock-Application",
        "required": False,
        "description": "Optional: the application key the client expects; 403 on a mismatch.",
        "schema": {"type": "string"},
    },
]

IF_NONE_MATCH = {
    "in": "header",
    "name": "If-None-Match",
    "required": False,
    "description": "The request will be processed only if ETag doesn't match any of the values "
    "listed.",
    "schema": {"type": "string"},
}

BUCKETING = (
    "Percentage rollouts and `percentage` conditions bucket a targeting key as "
    '`int(sha256(f"{flag_key}:{salt}:{targeting_key}").hexdigest()[:15], 16) / 16**15` '
    "(a float in [0, 1)); rollout weights are percentages, cumulative over the variants in "
    "their stored order. A rule set is evaluated as: killed → off variant (DISABLED); "
    "disabled → off variant (DISABLED); first rule whose conditions all hold → its variant "
    "(TARGETING_MATCH) or split (SPLIT); otherwise the default variant (STATIC) or split (SPLIT)."
)


def _flag_schema() -> dict:
    serve = {
        "type": "object",
        "description": "Either one variant or a percentage split across variants",
        "properties": {
            "variant": {"type": "string"},
            "rollout": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["variant", "weight"],
                    "properties": {
                        "variant": {"type": "string"},
                        "weight": {"type": "number", "minimum": 0, "maximum": 100},
                    },
                },
            },
        },
    }
    return {
        "type": "object",
        "description": BUCKETING,
        "required": ["type", "kind", "salt", "variants", "off_variant", "killed", "enabled"],
        "properties": {
            "type": {"type": "string", "enum": ["boolean", "string", "number", "json"]},
            "kind": {
                "type": "string",
                "enum": ["release", "experiment", "operational", "kill_switch"],
            },
            "salt": {"type": "string"},
            "variants": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["key", "value"],
                    "properties": {
                        "key": {"type": "string"},
                        "value": {},
                        "description": {"type": "string"},
                        "ref": {
                            "type": "object",
                            "description": "The prompt or model config version this variant "
                            "selects; its content is in prompt_versions / model_config_versions "
                            "under '<key>@<version>'.",
                            "properties": {
                                "kind": {"type": "string", "enum": ["prompt", "model_config"]},
                                "key": {"type": "string"},
                                "version": {"type": "integer"},
                            },
                        },
                    },
                },
            },
            "off_variant": {"type": "string"},
            "rules_version": {"type": "integer"},
            "killed": {"type": "boolean"},
            "enabled": {"type": "boolean"},
            "rules": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "conditions": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "attribute": {"type": "string"},
                                    "operator": {"type": "string", "enum": list(OPERATORS)},
                                    "value": {},
                                    "values": {"type": "array"},
                                },
                            },
                        },
                        "serve": serve,
                    },
                },
            },
            "default": serve,
        },
    }


def _versioned(description: str, extra: dict) -> dict:
    return {
        "type": "object",
        "description": description,
        "properties": {
            "version": {"type": "integer"},
            "content_hash": {"type": "string", "description": "sha256 of canonical JSON"},
            **extra,
        },
    }


PROMPT_FIELDS = {
    "system": {"type": "string"},
    "user": {"type": "string"},
    "variables": {"type": "array", "items": {"type": "string"}},
    "params": {"type": "object"},
    "tools": {
        "type": "array",
        "description": "Present when the prompt offers tools: each {name, description, "
        "parameters (JSON Schema)}",
        "items": {"type": "object"},
    },
}
MODEL_FIELDS = {
    "provider": {"type": "string"},
    "base_url": {"type": "string"},
    "model": {"type": "string"},
    "api_key_env": {
        "type": "string",
        "description": "Name of the environment variable holding the provider key (never the "
        "key itself)",
    },
    "temperature": {"type": "number"},
    "max_tokens": {"type": "integer"},
    "fallbacks": {
        "type": "array",
        "items": {"type": "string"},
        "description": "Present when set: the model config keys (of this snapshot's "
        "model_configs) to call, in order, when this one fails or its breaker is open; report "
        "such a call's usage with fallback_from",
    },
    "breaker": {
        "type": "object",
        "description": "Present when set: stop calling this model config for a while once at "
        "least min_requests calls in the last window_s seconds failed at error_rate or more",
        "properties": {
            "error_rate": {"type": "number"},
            "window_s": {"type": "integer"},
            "min_requests": {"type": "integer"},
        },
    },
}


def document() -> dict[str, Any]:
    ofrep_tags = ["OFREP"]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Airlock runtime API",
            "version": "1.0.0",
            "description": "What production applications call: the resolved config snapshot of "
            "their environment, and OpenFeature Remote Evaluation Protocol (OFREP) flag "
            "evaluation. Authenticate with a per-environment API key. Changes made in the "
            "console are visible to the next request (server caches are at most one second "
            "old).",
        },
        "servers": [{"url": "/"}],
        "security": [{"BearerAuth": []}, {"ApiKeyAuth": []}],
        "paths": {
            "/api/v1/config": {
                "get": {
                    "tags": ["Config"],
                    "summary": "Resolved snapshot of the key's environment",
                    "description": "Live prompt versions (templates, variables, params), model "
                    "configs (never secrets) and flags with their rules. Poll it with "
                    "If-None-Match: an unchanged snapshot answers 304. Needs scope config:read.",
                    "parameters": [IF_NONE_MATCH, *ASSERTION_HEADERS],
                    "responses": {
                        "200": {
                            "description": "The snapshot",
                            "headers": {
                                "ETag": {
                                    "description": "Strong entity tag of the snapshot",
                                    "schema": {"type": "string"},
                                }
                            },
                            "content": _json_content(_ref("configSnapshot")),
                        },
                        "304": {"description": "Not modified since the ETag you sent"},
                        **AUTH_RESPONSES,
                    },
                }
            },
            "/api/v1/usage": {
                "post": {
                    "tags": ["Usage"],
                    "summary": "Report a batch of model calls (up to 1,000 events)",
                    "description": "Accepted or rejected whole. Idempotent by event_id within "
                    "the key's environment: a retried batch counts each event once. Cost is "
                    "computed by Airlock from the price in effect at each event's time, never "
                    "taken from the client. The environment comes from the key. Needs scope "
                    "usage:write.",
                    "parameters": [*ASSERTION_HEADERS],
                    "requestBody": {"required": True, "content": _json_content(_ref("usageBatch"))},
                    "responses": {
                        "202": {
                            "description": "Stored (earlier events are counted, not stored)",
                            "content": _json_content(_ref("usageAccepted")),
                        },
                        "200": {
                            "description": "Every event was already stored",
                            "content": _json_content(_ref("usageAccepted")),
                        },
                        "400": {
                            "description": "Refused whole: the body is not JSON, is nested "
                            "deeper than 64 levels, or an event breaks this schema (type, bound, "
                            "length; text without NUL); each error names event index and field",
                            "content": _json_content(_ref("usageErrors")),
                        },
                        "413": {
                            "description": "The body is over 2 MB",
                            "content": _json_content(_ref("usageErrors")),
                        },
                        "422": {
                            "description": "Refused whole: well formed, but an event breaks a "
                            "rule a schema cannot state (time in the future or past retention, "
                            "an event id repeated in the batch, cached_tokens over input_tokens, "
                            "a cost over $999,999.99 at the price in effect); each error names "
                            "event index and field",
                            "content": _json_content(_ref("usageErrors")),
                        },
                        **AUTH_RESPONSES,
                    },
                }
            },
            "/api/v1/samples": {
                "post": {
                    "tags": ["Samples"],
                    "summary": "Send production samples for quality review (up to 500)",
                    "description": "Accepted or refused whole. Each sample is redacted by the "
                    "application's sample policy (emails, phone numbers, card numbers, IBANs, "
                    "SSNs and custom patterns) before it is stored; a share of them is scored "
                    "by the application's judge. Idempotent by sample_id and time within the "
                    "key's environment. Needs scope samples:write.",
                    "parameters": [*ASSERTION_HEADERS],
                    "requestBody": {
                        "required": True,
                        "content": _json_content(_ref("sampleBatch")),
                    },
                    "responses": {
                        "202": {
                            "description": "Stored (samples sent before are counted, not "
                            "stored again)",
                            "content": _json_content(_ref("usageAccepted")),
                        },
                        "200": {
                            "description": "Every sample was already stored",
                            "content": _json_content(_ref("usageAccepted")),
                        },
                        "400": {
                            "description": "Refused whole: the body is not JSON, or a sample "
                            "breaks this schema; each error names sample index and field",
                            "content": _json_content(_ref("usageErrors")),
                        },
                        "413": {
                            "description": "The body is over 2 MB",
                            "content": _json_content(_ref("usageErrors")),
                        },
                        "422": {
                            "description": "Refused whole: a time in the future or past "
                            "retention, or a sample_id repeated in the batch",
                            "content": _json_content(_ref("usageErrors")),
                        },
                        **AUTH_RESPONSES,
                    },
                }
            },
            "/ofrep/v1/evaluate/flags/{key}": {
                "post": {
                    "tags": ofrep_tags,
                    "summary": "OFREP single flag evaluation contract",
                    "description": "Evaluate one flag for a context. Needs scope config:read.",
                    "parameters": [
                        {
                            "name": "key",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        *ASSERTION_HEADERS,
                    ],
                    "requestBody": {"content": _json_content(_ref("evaluationRequest"))},
                    "responses": {
                        "200": {
                            "description": "OFREP successful evaluation response",
                            "content": _json_content(_ref("evaluationSuccess")),
                        },
                        "400": {
                            "description": "Bad evaluation request (PARSE_ERROR, "
                            "INVALID_CONTEXT, TARGETING_KEY_MISSING)",
                            "content": _json_content(_ref("evaluationFailure")),
                        },
                        "404": {
                            "description": "Flag not found",
                            "content": _json_content(_ref("flagNotFound")),
                        },
                        **AUTH_RESPONSES,
                        "500": {
                            "description": "The flag's definition cannot be evaluated "
                            "(errorCode GENERAL)",
                            "content": _json_content(_ref("evaluationFailure")),
                        },
                    },
                }
            },
            "/ofrep/v1/evaluate/flags": {
                "post": {
                    "tags": ofrep_tags,
                    "summary": "OFREP bulk flag evaluation contract",
                    "description": "Evaluate every flag of the environment for a context. "
                    "The ETag covers (snapshot, context): poll with If-None-Match. Needs scope "
                    "config:read.",
                    "parameters": [IF_NONE_MATCH, *ASSERTION_HEADERS],
                    "requestBody": {"content": _json_content(_ref("bulkEvaluationRequest"))},
                    "responses": {
                        "200": {
                            "description": "OFREP successful evaluation response",
                            "headers": {
                                "ETag": {
                                    "description": "Entity tag used for cache validation",
                                    "schema": {"type": "string"},
                                }
                            },
                            "content": _json_content(_ref("bulkEvaluationSuccess")),
                        },
                        "304": {"description": "Bulk evaluation is not modified"},
                        "400": {
                            "description": "Bad evaluation request",
                            "content": _json_content(_ref("bulkEvaluationFailure")),
                        },
                        **AUTH_RESPONSES,
                    },
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "tags": ["Meta"],
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1 document"}},
                }
            },
            "/health": {
                "get": {
                    "tags": ["Meta"],
                    "summary": "The process is alive (touches nothing else)",
                    "security": [],
                    "responses": {"200": {"description": '{"status": "ok"}'}},
                }
            },
            "/ready": {
                "get": {
                    "tags": ["Meta"],
                    "summary": "Database and broker reachable",
                    "security": [],
                    "responses": {
                        "200": {"description": "Ready"},
                        "503": {"description": "A dependency is failing; the body names it"},
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "BearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Authorization: Bearer <API key> (per application × "
                    "environment, created in the console or with manage.py create_api_key)",
                },
                "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "schemas": _schemas(),
        },
    }


USAGE_MAX_TOKENS = 1_000_000_000
USAGE_MAX_LATENCY_MS = 86_400_000
USAGE_TEXT_LIMITS = {
    "event_id": 100,
    "model": 200,
    "prompt_version": 120,
    "feature": 120,
    "variant": 120,
    "user_id": 120,
    "fallback_from": 200,
    "flag": 80,
    "shadow_of": 100,
}


def _usage_event() -> dict[str, Any]:
    """One usage event, with the bounds console.usage.services enforces, so a client or fuzzer
    reading this document knows them. Stated here (the api layer does not import usage); a
    test keeps the two equal."""

    def text(name: str, description: str = "", required: bool = False) -> dict:
        schema: dict[str, Any] = {"type": "string", "maxLength": USAGE_TEXT_LIMITS[name]}
        if required:
            schema["minLength"] = 1
        if description:
            schema["description"] = description
        return schema

    tokens = {"type": "integer", "minimum": 0, "maximum": USAGE_MAX_TOKENS}
    return {
        "type": "object",
        "required": ["event_id", "time", "model"],
        # Only a shadow call carries its answer.
        "dependentRequired": {"output": ["shadow_of"]},
        "properties": {
            "event_id": text("event_id", "Unique per application and environment", True),
            "time": {
                "type": "string",
                "format": "date-time",
                "description": "ISO 8601 with a zone; within the retention period, not in "
                "the future",
            },
            "model": text("model", "model config KEY@VERSION or provider model name", True),
            "prompt_version": text("prompt_version", "KEY@VERSION"),
            "feature": text("feature"),
            "flag": text("flag", "The flag whose evaluation chose `variant` (experiments)"),
            "variant": text("variant", "The variant the flag served"),
            "shadow_of": text(
                "shadow_of",
                "A shadow call: the event_id of the live request it ran alongside",
            ),
            "output": {
                "type": "string",
                "maxLength": sample_services.SHADOW_OUTPUT_LIMIT,
                "description": "A shadow call's answer (only with shadow_of; never served). "
                "Stored redacted by the sample policy; for the judged share, compared with the "
                "live answer sent as a sample whose sample_id is shadow_of",
            },
            "input_tokens": tokens,
            "cached_tokens": {**tokens, "description": "At most input_tokens"},
            "output_tokens": tokens,
            "latency_ms": {"type": "number", "minimum": 0, "maximum": USAGE_MAX_LATENCY_MS},
            "status": {"type": "string", "enum": ["ok", "error", "timeout"]},
            "cache_hit": {"type": "boolean"},
            "feedback": {"type": "string", "enum": ["up", "down", "none"]},
            "user_id": text("user_id", "An anonymised user id (stored hashed)"),
            "fallback_from": text(
                "fallback_from",
                "The model config (KEY@VERSION) or provider model this call fell back from",
            ),
        },
    }


def _sample() -> dict[str, Any]:
    """One production sample, with the bounds console.samples.services enforces."""
    limits = sample_services.TEXT_LIMITS

    def text(name: str, description: str = "") -> dict:
        schema: dict[str, Any] = {"type": "string", "maxLength": limits[name]}
        return {**schema, "description": description} if description else schema

    return {
        "type": "object",
        "required": ["sample_id", "time"],
        "properties": {
            "sample_id": {
                **text("sample_id", "Unique per environment and time"),
                "minLength": 1,
            },
            "time": {
                "type": "string",
                "format": "date-time",
                "description": "ISO 8601 with a zone; within the sample retention period, not "
                "in the future",
            },
            "inputs": {
                "type": "object",
                "description": "The prompt's input variables; `question` is shown first",
            },
            "output": text("output"),
            "context": {
                "description": "The retrieved context: text, or a list of passages",
                "oneOf": [
                    text("context"),
                    {"type": "array", "items": {"type": "string"}},
                ],
            },
            "sources": {
                "type": "array",
                "maxItems": sample_services.MAX_SOURCES,
                "items": {"type": "string", "maxLength": sample_services.MAX_SOURCE_CHARS},
            },
            "prompt_version": text("prompt_version", "KEY@VERSION"),
            "model_config": text("model_config", "KEY@VERSION"),
            "variant": text("variant", "The flag variant that served the request"),
            "flag": text("flag", "The flag whose evaluation chose `variant` (experiments)"),
            "feedback": {"type": "string", "enum": ["up", "down", "none"]},
            "feedback_comment": text("feedback_comment"),
        },
    }


def _schemas() -> dict[str, Any]:
    return {
        "usageBatch": {
            "type": "object",
            "required": ["events"],
            "properties": {
                "events": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1000,
                    "items": _usage_event(),
                }
            },
        },
        "sampleBatch": {
            "type": "object",
            "required": ["samples"],
            "properties": {
                "samples": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": sample_services.MAX_BATCH,
                    "items": _sample(),
                }
            },
        },
        "usageAccepted": {
            "type": "object",
            "properties": {"accepted": {"type": "integer"}, "duplicates": {"type": "integer"}},
        },
        "usageErrors": {
            "type": "object",
            "properties": {
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "index": {"type": ["integer", "null"]},
                            "field": {"type": ["string", "null"]},
                            "message": {"type": "string"},
                        },
                    },
                }
            },
        },
        "apiError": {
            "type": "object",
            "required": ["error", "errorDetails"],
            "properties": {
                "error": {
                    "type": "string",
                    "enum": ["unauthorized", "forbidden", "rate_limited"],
                },
                "errorDetails": {"type": "string"},
            },
        },
        "configSnapshot": {
            "type": "object",
            "required": ["application", "environment", "prompts", "model_configs", "flags"],
            "properties": {
                "application": {"type": "string"},
                "environment": {"type": "string"},
                "prompts": {
                    "type": "object",
                    "description": "Live prompt versions by prompt key",
                    "additionalProperties": _versioned("A live prompt version", PROMPT_FIELDS),
                },
                "model_configs": {
                    "type": "object",
                    "description": "Live model config versions by key",
                    "additionalProperties": _versioned("A live model config", MODEL_FIELDS),
                },
                "flags": {
                    "type": "object",
                    "description": "Flags by key, with this environment's rules",
                    "additionalProperties": _ref("flag"),
                },
                "prompt_versions": {
                    "type": "object",
                    "description": "Prompt versions named by flag variants, by '<key>@<version>'",
                    "additionalProperties": _versioned("A prompt version", PROMPT_FIELDS),
                },
                "model_config_versions": {
                    "type": "object",
                    "description": "Model config versions named by flag variants",
                    "additionalProperties": _versioned("A model config version", MODEL_FIELDS),
                },
            },
        },
        "flag": _flag_schema(),
        "context": {
            "type": "object",
            "description": "Context information for flag evaluation; targetingKey (string) is "
            "what percentage rollouts bucket on",
            "properties": {"targetingKey": {"type": "string"}},
        },
        "evaluationRequest": {
            "description": "Flag evaluation request",
            "type": "object",
            "properties": {"context": _ref("context")},
        },
        "bulkEvaluationRequest": {
            "description": "Evaluate multiple flags in one request",
            "type": "object",
            "properties": {"context": _ref("context")},
        },
        "evaluationSuccess": {
            "description": "Flag evaluation success response",
            "type": "object",
            "required": ["key", "value", "reason", "variant"],
            "properties": {
                "key": {"type": "string"},
                "value": {"description": "boolean, string, number or JSON value of the variant"},
                "reason": {
                    "type": "string",
                    "enum": ["STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "UNKNOWN"],
                },
                "variant": {"type": "string"},
                "metadata": {
                    "type": "object",
                    "description": "rulesVersion, and ruleIndex/ruleName when a rule decided; "
                    "killed=true when the kill switch decided",
                    "additionalProperties": {
                        "oneOf": [{"type": "boolean"}, {"type": "string"}, {"type": "number"}]
                    },
                },
            },
        },
        "evaluationFailure": {
            "description": "Flag evaluation failure response",
            "type": "object",
            "required": ["key", "errorCode"],
            "properties": {
                "key": {"type": "string"},
                "errorCode": {
                    "type": "string",
                    "enum": ["PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL"],
                },
                "errorDetails": {"type": "string"},
            },
        },
        "flagNotFound": {
            "description": "Flag not found response",
            "type": "object",
            "required": ["key", "errorCode"],
            "properties": {
                "key": {"type": "string"},
                "errorCode": {"type": "string", "enum": ["FLAG_NOT_FOUND"]},
                "errorDetails": {"type": "string"},
            },
        },
        "bulkEvaluationSuccess": {
            "description": "Success response for the bulk evaluation request",
            "type": "object",
            "required": ["flags"],
            "properties": {
                "flags": {
                    "type": "array",
                    "items": {"oneOf": [_ref("evaluationSuccess"), _ref("evaluationFailure")]},
                }
            },
        },
        "bulkEvaluationFailure": {
            "description": "Bulk evaluation failure response",
            "type": "object",
            "required": ["errorCode"],
            "properties": {
                "errorCode": {"type": "string", "enum": ["PARSE_ERROR", "INVALID_CONTEXT"]},
                "errorDetails": {"type": "string"},
            },
        },
    }
