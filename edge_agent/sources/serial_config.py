"""Configuration of serial-line instruments (`[[serial]]` in the agent config)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

LINE_ENDINGS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}


class SerialPortConfig(BaseModel):
    """One serial port, the line format its instrument speaks, and where its values go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    port: str = Field(min_length=1)
    baudrate: int = Field(default=9600, gt=0)
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: float = Field(default=1, description="1, 1.5 or 2")
    bytesize: Literal[5, 6, 7, 8] = 8
    line_ending: Literal["lf", "crlf", "cr"] = "lf"
    encoding: str = "ascii"
    max_line_bytes: int = Field(default=4096, ge=16)
    # framing
    framing: Literal["csv", "kv", "json", "regex"] = "csv"
    csv_header: bool = True  # csv: the instrument sends a header line (again after a reboot)
    columns: list[str] = Field(default_factory=list)  # csv without header: fixed columns
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    pair_separator: str | None = None  # kv: None = any whitespace; or "," / ";"
    kv_separator: str = Field(default="=", min_length=1)
    pattern: str | None = None  # regex: named groups are fields
    # placing values
    asset: str | None = None  # the asset every line belongs to
    asset_field: str | None = None  # or: the field that names it
    timestamp_field: str | None = None  # None: the time the line arrived
    timestamp: Literal["ns", "us", "ms", "s", "rfc3339"] = "s"
    sensor_map: dict[str, str] = Field(default_factory=dict)  # field -> sensor name
    ignore_fields: list[str] = Field(default_factory=list)
    # polled instruments
    request: str | None = None  # sent every request_interval_s, e.g. "MEAS?\r\n"
    request_interval_s: float = Field(default=1.0, gt=0)
    # reopening
    read_timeout_s: float = Field(default=0.1, gt=0)
    reopen_backoff_s: float = Field(default=0.2, gt=0)
    reopen_backoff_max_s: float = Field(default=10.0, gt=0)
    silent_after_s: float | None = Field(default=None, gt=0)  # no line this long: "lost"

    @model_validator(mode="after")
    def _check(self) -> SerialPortConfig:
        where = f"serial port {self.name!r}"
        if self.stopbits not in (1, 1.5, 2):
            raise ValueError(f"{where}: stopbits = {self.stopbits}; use 1, 1.5 or 2")
        if self.asset is None and self.asset_field is None:
            raise ValueError(f"{where}: set `asset` (or `asset_field` if lines name the asset)")
        if self.framing == "regex":
            if not self.pattern:
                raise ValueError(f"{where}: framing = \"regex\" needs `pattern` with named "
                                 "groups, e.g. pattern = 'T=(?P<bearing_temp_c>[-\\d.]+)'")
            try:
                rx = re.compile(self.pattern)
            except re.error as e:
                raise ValueError(f"{where}: `pattern` is not a valid regex: {e}") from None
            if not rx.groupindex:
                raise ValueError(f"{where}: `pattern` has no named groups (?P<name>...)")
        elif self.pattern:
            raise ValueError(f"{where}: `pattern` is for framing = \"regex\" only")
        if self.framing == "csv" and not self.csv_header and not self.columns:
            raise ValueError(f"{where}: csv without a header line needs `columns`, "
                             "e.g. columns = [\"ts\", \"speed_rpm\", \"flow_m3h\"]")
        if self.columns and self.framing != "csv":
            raise ValueError(f"{where}: `columns` is for framing = \"csv\" only")
        return self

    @property
    def eol(self) -> bytes:
        return LINE_ENDINGS[self.line_ending]
