"""Parameterized accelerator models and a registry of presets.

A `Device` is the whole cost model of the simulator: an on-chip buffer that can
hold weights between queries, an off-chip link (bandwidth, energy per byte), the
on-chip read energy, and compute (MACs/s, energy per MAC). Weights are stored at
`bits` per element. Activations are assumed to stay on chip and are not charged.

The presets are order-of-magnitude stand-ins, documented so they can be argued
with, not measurements of a particular board:

- ``fpga-small``: a Zynq-7020 / Ultra96-class board: ~0.5 MB of BRAM, DDR3/4 at
  an effective 1.6 GB/s to the accelerator, ~20 GMAC/s of int8 DSP arrays;
  DRAM ~100 pJ/byte, BRAM ~5 pJ/byte, ~1 pJ/MAC.
- ``mcu``: a Cortex-M7-class microcontroller (STM32H7-like): 512 KB of SRAM for
  weights, external QSPI flash / SDRAM at ~80 MB/s, ~0.4 GMAC/s with SIMD int8;
  off-chip ~500 pJ/byte, SRAM ~10 pJ/byte, ~25 pJ/MAC.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..registry import Registry

__all__ = ["Device", "DEVICES", "get_device", "list_devices", "register_device"]


@dataclass(frozen=True)
class Device:
    """Cost model of one accelerator. Units: bytes, bytes/s, pJ, MAC/s.

    overlap: weight transfer overlaps compute (double buffering), so a query
        takes max(transfer, compute); otherwise their sum.
    """

    name: str
    buffer_bytes: int
    offchip_bytes_per_s: float
    offchip_pj_per_byte: float
    onchip_pj_per_byte: float
    macs_per_s: float
    pj_per_mac: float
    bits: int = 8
    overlap: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        for field_name in ("offchip_bytes_per_s", "macs_per_s"):
            if getattr(self, field_name) <= 0:
                raise ValueError(f"{field_name} must be positive")
        if self.buffer_bytes < 0:
            raise ValueError("buffer_bytes must be >= 0")
        if self.bits <= 0:
            raise ValueError("bits must be positive")

    def with_buffer_kb(self, kb: float) -> Device:
        return replace(self, buffer_bytes=int(kb * 1024))

    def latency_s(self, macs: int, offchip_bytes: int) -> float:
        compute = macs / self.macs_per_s
        transfer = offchip_bytes / self.offchip_bytes_per_s
        return max(compute, transfer) if self.overlap else compute + transfer

    def energy_pj(self, macs: int, offchip_bytes: int, weight_bytes: int) -> float:
        """Compute + off-chip fetch + every weight byte read once from the on-chip buffer."""
        return (macs * self.pj_per_mac + offchip_bytes * self.offchip_pj_per_byte
                + weight_bytes * self.onchip_pj_per_byte)


DEVICES: Registry[Device] = Registry("device")


def register_device(device: Device) -> Device:
    return DEVICES.add(device.name, device)


def list_devices() -> list[str]:
    return DEVICES.names()


def get_device(name: str, buffer_kb: float | None = None) -> Device:
    """A preset by name, optionally with another on-chip buffer size (KiB)."""
    dev = DEVICES.get(name)
    return dev.with_buffer_kb(buffer_kb) if buffer_kb is not None else dev


register_device(Device(
    "fpga-small", buffer_bytes=512 * 1024, offchip_bytes_per_s=1.6e9, offchip_pj_per_byte=100.0,
    onchip_pj_per_byte=5.0, macs_per_s=20e9, pj_per_mac=1.0,
    description="Zynq-7020/Ultra96-class FPGA: 512 KiB BRAM, 1.6 GB/s DDR, 20 GMAC/s int8",
))
register_device(Device(
    "mcu", buffer_bytes=512 * 1024, offchip_bytes_per_s=80e6, offchip_pj_per_byte=500.0,
    onchip_pj_per_byte=10.0, macs_per_s=0.4e9, pj_per_mac=25.0,
    description="Cortex-M7-class MCU: 512 KiB SRAM, 80 MB/s external memory, 0.4 GMAC/s int8",
))
