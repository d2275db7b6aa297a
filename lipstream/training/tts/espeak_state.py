"""Reset the hidden synthesis state of libespeak-ng, so the same text always gives the same audio.

libespeak-ng keeps waveform-generator state in static variables (pitch-flutter phase, wave phase,
cycle and amplitude counters) that no API call resets. The same sentence then comes out a few
samples longer or shorter depending on what was spoken before it, so a corpus stream would
depend on which other streams shared the process. The library in the `espeakng-loader` wheel is
not stripped: we find those variables in its ELF symbol table and zero them before each
utterance, and seed its random generator through the public `espeak_ng_SetRandSeed`. Where the
symbols cannot be found the reset is skipped (audio then varies slightly; labels do not).
"""

import ctypes
import struct
from pathlib import Path
from typing import Any

# wavegen.c statics (local symbols carry a ".NNNN" suffix from the compiler).
STATE_VARIABLES = (
    "Flutter_ix", "h_switch_sign", "wavephase", "cycle_count", "amplitude2", "glotlast", "vlast", "nlast",
)  # fmt: skip
ANCHOR = "espeak_Synth"  # an exported function: its runtime address gives the load base
SHT_SYMTAB = 2


def elf_symbols(path: Path) -> dict[str, tuple[int, int]]:
    """Symbol name -> (value, size) from a 64-bit little-endian ELF .symtab; {} if there is none."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return {}
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    symtab = next((s for s in sections if s[1] == SHT_SYMTAB), None)
    if symtab is None:
        return {}
    strtab = sections[symtab[6]]
    symbols: dict[str, tuple[int, int]] = {}
    for offset in range(symtab[4], symtab[4] + symtab[5], 24):
        name_ix, _info, _other, _shndx, value, size = struct.unpack_from("<IBBHQQ", data, offset)
        start = strtab[4] + name_ix
        name = data[start : data.index(b"\0", start)].decode("ascii", "replace")
        symbols[name.split(".")[0]] = (value, size)
    return symbols


class StateReset:
    """Zeroes libespeak-ng's generator state in the loaded library `lib` (from `library_path`)."""

    def __init__(self, lib: Any, library_path: Path) -> None:
        self._lib = lib
        self._regions: list[tuple[int, int]] = []
        symbols = elf_symbols(library_path)
        if ANCHOR not in symbols or not all(name in symbols for name in STATE_VARIABLES):
            return
        base = ctypes.cast(getattr(lib, ANCHOR), ctypes.c_void_p).value or 0
        base -= symbols[ANCHOR][0]
        self._regions = [(base + symbols[n][0], symbols[n][1]) for n in STATE_VARIABLES]

    @property
    def complete(self) -> bool:
        return bool(self._regions)

    def __call__(self) -> None:
        for address, size in self._regions:
            ctypes.memset(address, 0, size)
        if hasattr(self._lib, "espeak_ng_SetRandSeed"):
            self._lib.espeak_ng_SetRandSeed(0)
