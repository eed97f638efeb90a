"""GPU measurements with fabricbench's own CUDA kernels (cuda_kernels/*.cu): NVLink matrices (`nvlink`),
per-NIC bandwidth with GPU buffers (`ib`) and the GPU self-test (`selftest --gpu`). See docs/gpu.md.

Modules: kernels (sources, NVRTC/CuPy compile and cache), api (the GPU interface and its CuPy
implementation), fake (the interface for tests), pattern (the data pattern on the host), nvlink, sysfs (NICs
and PCIe paths), ib and ib_worker, selftest, cli (register(app)).
"""
