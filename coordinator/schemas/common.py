"""Shared schema pieces: camelCase models, UTC timestamps, bounded strings."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    """Fields are snake_case in Python and camelCase in JSON; both spellings are accepted."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True,
                              from_attributes=True)


class RequestModel(CamelModel):
    """A request body: a field it does not know is refused (400), so a typo or a field this
    API does not have never passes silently."""

    model_config = ConfigDict(extra="forbid")


class PartialUpdate(RequestModel):
    """A PUT body where only the fields sent change. Sending ``null`` clears a field that may
    be empty (``NULLABLE``); for any other field it is a 400, not a database error."""

    NULLABLE: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _no_null_for_required(self) -> "PartialUpdate":
        for name in self.model_fields_set:
            if getattr(self, name) is None and name not in self.NULLABLE:
                raise ValueError(f"{to_camel(name)} may not be null")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):  # noqa: ANN001, ANN206
        # The JSON schema (and so the OpenAPI document) offers null only where it is accepted.
        json_schema = handler(core_schema)
        schema = handler.resolve_ref_schema(json_schema)
        for name, field in cls.model_fields.items():
            options = schema.get("properties", {}).get(field.alias or name, {}).get("anyOf")
            if name not in cls.NULLABLE and options and {"type": "null"} in options:
                options.remove({"type": "null"})
        return json_schema


def as_utc(value: datetime) -> datetime:
    # SQLite hands timestamps back naive; they were written in UTC.
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ShortText = Annotated[str, StringConstraints(max_length=200)]
LongText = Annotated[str, StringConstraints(max_length=10_000)]
Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class Message(BaseModel):
    message: str


class Timestamps(CamelModel):
    created_at: UtcDatetime
    updated_at: UtcDatetime


def tags_field() -> object:
    return Field(default_factory=list, max_length=50)
