// Pointer-chase latency: one thread follows a chain of 8-byte pointers laid out one per 128-byte line (so no
// two hops share a cache line) in a random order (so no prefetcher helps). Each load depends on the previous
// one, so time / hops = nanoseconds per access. The buffer may live on a peer GPU (latency over NVLink/PCIe).
// Loads bypass L1 (ld.global.cg: cached in L2 only) so the measured hop is a real trip to L2/memory.
// Self-contained (no #include) so that NVRTC compiles it without the toolkit's headers.

typedef unsigned long long fb_u64;

#define FB_LINE_WORDS 16ull  // 128-byte stride, in 8-byte words

// chain[line * 16] = address of chain[next[line] * 16], for every line.
extern "C" __global__ void fb_chain_init(fb_u64 *chain, const unsigned int *next, fb_u64 lines)
{
    const fb_u64 stride = (fb_u64)blockDim.x * gridDim.x;
    for (fb_u64 i = (fb_u64)blockIdx.x * blockDim.x + threadIdx.x; i < lines; i += stride) {
        chain[i * FB_LINE_WORDS] = (fb_u64)(chain + (fb_u64)next[i] * FB_LINE_WORDS);
    }
}

__device__ __forceinline__ fb_u64 fb_load_cg(const fb_u64 *p)
{
    fb_u64 v;
    asm volatile("ld.global.cg.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}

// Follows `hops` pointers from `start`; writes where it ended so the chase cannot be optimised away.
extern "C" __global__ void fb_chase(const fb_u64 *start, fb_u64 hops, fb_u64 *end)
{
    if (threadIdx.x != 0 || blockIdx.x != 0) {
        return;
    }
    const fb_u64 *p = start;
    for (fb_u64 i = 0; i < hops; ++i) {
        p = (const fb_u64 *)fb_load_cg(p);
    }
    *end = (fb_u64)p;
}
