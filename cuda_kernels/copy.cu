// SM copy kernels: fabricbench nvlink (sm_read, sm_write, sm_*_bidir) and the local-copy self-test.
//
// 16-byte (uint4) accesses, coalesced: consecutive threads touch consecutive 16-byte elements. Each thread
// issues FB_UNROLL loads before any store, so every thread keeps FB_UNROLL * 16 bytes in flight. The grid is
// sized on the host from the SM count (blocks_per_sm x SMs, FB_THREADS threads each). `loops` repeats the
// whole copy inside one launch (nvbandwidth's SM method), so launch cost is paid once per sample.
// Read mode (pull) and write mode (push) are the same kernel launched on a different GPU: pull runs on the
// destination GPU with `src` in the peer's memory, push runs on the source GPU with `dst` in the peer's.
// Loads and stores are cache-global (__ldcg/__stcg: ld.global.cg / st.global.cg, cached in L2 only, as
// nvbandwidth's copy kernels): never the read-only/L1 path, so a repeated loop cannot be served from L1.
// Sizes that fit in L2 still read high; the host labels them (fabricbench/gpu/cache.py).
// Self-contained (no #include) so that NVRTC compiles it without the toolkit's headers.

#define FB_THREADS 512
#define FB_UNROLL 8

typedef unsigned long long fb_u64;

__device__ __forceinline__ void fb_copy_range(uint4 *__restrict__ dst, const uint4 *__restrict__ src, fb_u64 n,
                                              fb_u64 first, fb_u64 stride)
{
    fb_u64 i = first;
    // Main body: FB_UNROLL independent loads in flight, then the stores.
    for (; i + (FB_UNROLL - 1) * stride < n; i += FB_UNROLL * stride) {
        uint4 v[FB_UNROLL];
#pragma unroll
        for (int u = 0; u < FB_UNROLL; ++u) {
            v[u] = __ldcg(src + i + u * stride);
        }
#pragma unroll
        for (int u = 0; u < FB_UNROLL; ++u) {
            __stcg(dst + i + u * stride, v[u]);
        }
    }
    // Tail: fewer than FB_UNROLL elements left for this thread.
    for (; i < n; i += stride) {
        __stcg(dst + i, __ldcg(src + i));
    }
}

// One direction: n16 = number of 16-byte elements.
extern "C" __global__ void __launch_bounds__(FB_THREADS)
fb_copy(uint4 *__restrict__ dst, const uint4 *__restrict__ src, fb_u64 n16, unsigned int loops)
{
    const fb_u64 stride = (fb_u64)blockDim.x * gridDim.x;
    const fb_u64 first = (fb_u64)blockIdx.x * blockDim.x + threadIdx.x;
    for (unsigned int l = 0; l < loops; ++l) {
        fb_copy_range(dst, src, n16, first, stride);
    }
}

// Both directions in one launch: even warps copy src0 -> dst0, odd warps copy src1 -> dst1, each direction
// with half of the threads (blockDim.x must be a multiple of 64 so every block holds as many warps of each).
extern "C" __global__ void __launch_bounds__(FB_THREADS)
fb_copy_bidir(uint4 *__restrict__ dst0, const uint4 *__restrict__ src0, uint4 *__restrict__ dst1,
              const uint4 *__restrict__ src1, fb_u64 n16, unsigned int loops)
{
    const unsigned int warps_per_block = blockDim.x / 32u;
    const unsigned int warp_in_block = threadIdx.x / 32u;
    const unsigned int lane = threadIdx.x % 32u;
    const fb_u64 warp = (fb_u64)blockIdx.x * warps_per_block + warp_in_block;
    const unsigned int direction = (unsigned int)(warp & 1ull);
    const fb_u64 first = (warp >> 1) * 32ull + lane;              // index among this direction's threads
    const fb_u64 stride = (fb_u64)blockDim.x * gridDim.x / 2ull;  // threads per direction
    uint4 *__restrict__ dst = direction ? dst1 : dst0;
    const uint4 *__restrict__ src = direction ? src1 : src0;
    for (unsigned int l = 0; l < loops; ++l) {
        fb_copy_range(dst, src, n16, first, stride);
    }
}
