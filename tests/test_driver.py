"""kernels/driver.py against cuda-python's real bindings (no GPU needed): the one status check
reads the real CUresult enum, and opening a device where there is no driver is one clear error.
The stand-in drivers in the other tests answer plain ints; these are the real types."""

import pytest

from lipstream.errors import GpuError
from lipstream.kernels.driver import NO_DEVICE, check, open_device

driver = pytest.importorskip("cuda.bindings.driver", reason="cuda-python is not installed (the gpu extra)")


def test_the_status_check_reads_cuda_pythons_own_results() -> None:
    assert check(driver, (driver.CUresult.CUDA_SUCCESS, 42), "count devices") == 42
    assert check(driver, (driver.CUresult.CUDA_SUCCESS,), "synchronise") is None
    with pytest.raises(GpuError, match="CUDA failed to launch a kernel: CUDA_ERROR_LAUNCH_FAILED"):
        check(driver, (driver.CUresult.CUDA_ERROR_LAUNCH_FAILED, None), "launch a kernel")


def test_opening_a_device_without_a_driver_is_one_clear_error() -> None:
    try:
        open_device(driver)
    except GpuError as err:
        assert str(err) == NO_DEVICE
    else:
        pytest.skip("this machine has an NVIDIA GPU and driver")
