"""Configuration of Modbus devices: connection, quirks, and the register map of each unit.

A *device* is one connection (a TCP endpoint, or one serial line for RTU); it serves one or more
*units* (Modbus unit ids, polled in turn over that connection).  Each unit's registers map to
sensors of assets.  Validation messages name the key and say how to fix it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Table = Literal["holding", "input", "coil", "discrete"]
DataType = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "float32", "float64", "string"
]
Order = Literal["ABCD", "DCBA", "BADC", "CDAB"]

BIT_TABLES = ("coil", "discrete")
# registers a data type takes; string: see RegisterConfig.length
WORDS = {"bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "int64": 4,
         "float32": 2, "float64": 4}
PROTOCOL_MAX_REGISTERS = 125
PROTOCOL_MAX_BITS = 2000


class RegisterConfig(BaseModel):
    """One value in a unit's register map."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: Table = "holding"
    address: int = Field(ge=0, le=65535 + 1)  # +1: one-based devices may say 65536
    type: DataType = "uint16"
    order: Order | None = None  # default: the device's `order`
    length: int = Field(default=0, ge=0, le=PROTOCOL_MAX_REGISTERS)  # registers, strings only
    scale: float = 1.0
    offset: float = 0.0  # value = raw * scale + offset
    unit: str = ""
    asset: str | None = None  # default: the unit's `asset`
    sensor: str | None = None  # None: read and exposed in health(), never sent as a sample
    name: str | None = None  # label for health(); default sensor or table:address

    @model_validator(mode="after")
    def _check(self) -> RegisterConfig:
        if self.table in BIT_TABLES and self.type != "bool":
            raise ValueError(
                f"register {self.table}:{self.address}: {self.table}s hold bits, so `type` must "
                f"be \"bool\" (got {self.type!r}); read multi-bit values from holding/input")
        if self.type == "string":
            if self.length < 1:
                raise ValueError(
                    f"register {self.table}:{self.address}: a string needs `length` "
                    "(registers, 2 characters each), e.g. length = 8")
            if self.sensor is not None:
                raise ValueError(
                    f"register {self.table}:{self.address}: strings are identification, not "
                    "samples; remove `sensor` and give it a `name` instead")
        elif self.length:
            raise ValueError(
                f"register {self.table}:{self.address}: `length` is for strings only; "
                f"a {self.type} takes {WORDS[self.type]} register(s)")
        return self

    @property
    def words(self) -> int:
        return self.length if self.type == "string" else WORDS[self.type]

    @property
    def label(self) -> str:
        return self.name or self.sensor or f"{self.table}:{self.address}"


class ModbusUnitConfig(BaseModel):
    """One Modbus unit id on a device's connection, usually one asset (a drive, a meter)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit_id: int = Field(default=1, ge=0, le=247)
    asset: str | None = None
    registers: list[RegisterConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> ModbusUnitConfig:
        for r in self.registers:
            if r.sensor is not None and (r.asset or self.asset) is None:
                raise ValueError(
                    f"unit {self.unit_id} register {r.table}:{r.address} ({r.sensor}): no asset; "
                    "set `asset` on the unit or on the register")
        return self


class ModbusDeviceConfig(BaseModel):
    """One Modbus connection (`[[modbus]]` in the agent config) and the units behind it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    transport: Literal["tcp", "rtu"] = "tcp"
    # tcp
    host: str = "127.0.0.1"
    port: int = Field(default=502, ge=1, le=65535)
    # rtu
    serial_port: str | None = None
    baudrate: int = Field(default=19200, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    # timing
    poll_interval_s: float = Field(default=1.0, gt=0)
    timeout_s: float = Field(default=1.0, gt=0)
    retries: int = Field(default=2, ge=0, le=10)
    retry_backoff_s: float = Field(default=0.05, ge=0)
    retry_backoff_max_s: float = Field(default=0.5, ge=0)
    reconnect_backoff_s: float = Field(default=0.2, gt=0)
    reconnect_backoff_max_s: float = Field(default=10.0, gt=0)
    # device quirks
    request_pause_s: float = Field(default=0.0, ge=0)  # silence between two requests
    address_base: Literal[0, 1] = 0  # 1: the device's manual numbers registers from 1
    max_registers_per_read: int = Field(default=PROTOCOL_MAX_REGISTERS, ge=1)
    max_bits_per_read: int = Field(default=PROTOCOL_MAX_BITS, ge=1)
    max_gap: int = Field(default=8, ge=0)  # unused registers a coalesced read may span
    order: Order = "ABCD"  # default byte/word order of multi-byte values
    units: list[ModbusUnitConfig] = Field(min_length=1)

    @field_validator("max_registers_per_read")
    @classmethod
    def _max_regs(cls, v: int) -> int:
        if v > PROTOCOL_MAX_REGISTERS:
            raise ValueError(
                f"max_registers_per_read = {v}: Modbus allows at most {PROTOCOL_MAX_REGISTERS} "
                "registers per read; use a value <= 125")
        return v

    @field_validator("max_bits_per_read")
    @classmethod
    def _max_bits(cls, v: int) -> int:
        if v > PROTOCOL_MAX_BITS:
            raise ValueError(
                f"max_bits_per_read = {v}: Modbus allows at most {PROTOCOL_MAX_BITS} bits per "
                "read; use a value <= 2000")
        return v

    @model_validator(mode="after")
    def _check(self) -> ModbusDeviceConfig:
        if self.transport == "rtu" and not self.serial_port:
            raise ValueError(
                f"modbus device {self.name!r}: transport = \"rtu\" needs `serial_port`, "
                "e.g. serial_port = \"/dev/ttyUSB0\"")
        ids = [u.unit_id for u in self.units]
        if len(set(ids)) != len(ids):
            raise ValueError(f"modbus device {self.name!r}: a unit_id appears twice in `units`")
        for u in self.units:
            for r in u.registers:
                wire = r.address - self.address_base
                if wire < 0:
                    raise ValueError(
                        f"modbus device {self.name!r} unit {u.unit_id}: address {r.address} is "
                        f"below address_base = {self.address_base}")
                limit = self.max_bits_per_read if r.table in BIT_TABLES else \
                    self.max_registers_per_read
                if r.words > limit:
                    raise ValueError(
                        f"modbus device {self.name!r} unit {u.unit_id}: register {r.address} "
                        f"takes {r.words} registers, more than max_registers_per_read = {limit}")
                if wire + r.words > 65536:
                    raise ValueError(
                        f"modbus device {self.name!r} unit {u.unit_id}: register {r.address} "
                        "runs past the end of the 65536-register address space")
        return self
