"""Built-in asset classes, so a config can say `class = "centrifugal_pump"`, not list sensors."""

from __future__ import annotations

from models.schema import AssetSchema, OffCondition, SensorSpec

CENTRIFUGAL_PUMP = AssetSchema(
    asset_class="centrifugal_pump",
    sample_period_s=1.0,
    window=30,
    off_condition=OffCondition("speed_rpm", 100.0),
    sensors=(
        SensorSpec("speed_rpm", "rpm", 0.0, 4000.0),
        SensorSpec("motor_current_a", "A", 0.0, 400.0),
        SensorSpec("suction_pressure_bar", "bar", -1.0, 20.0),
        SensorSpec("discharge_pressure_bar", "bar", -1.0, 60.0),
        SensorSpec("flow_m3h", "m3/h", 0.0, 2000.0),
        SensorSpec("bearing_temp_c", "degC", -40.0, 200.0),
        SensorSpec("vibration_x_mm_s", "mm/s", 0.0, 100.0),
        SensorSpec("vibration_y_mm_s", "mm/s", 0.0, 100.0),
        SensorSpec("winding_temp_c", "degC", -40.0, 250.0),
    ),
)

BUILTIN_CLASSES: dict[str, AssetSchema] = {CENTRIFUGAL_PUMP.asset_class: CENTRIFUGAL_PUMP}
