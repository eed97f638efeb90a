// Pattern fill and verify: every transfer's destination is poisoned before the copy and checked after it, so
// a copy that did nothing, went to the wrong place or flipped bits shows as mismatches, not as bandwidth.
//
// Word i (32-bit) of a buffer filled with `seed` holds fb_pattern(seed, i), a 64-bit-indexed integer hash
// (splitmix64 finaliser). The poison is the bitwise NOT of the same pattern, so it differs from the expected
// value in every bit of every word. fabricbench/gpu/pattern.py computes the same values on the host.
// Self-contained (no #include) so that NVRTC compiles it without the toolkit's headers.

typedef unsigned long long fb_u64;

__device__ __forceinline__ unsigned int fb_pattern(fb_u64 seed, fb_u64 i)
{
    fb_u64 z = seed + (i + 1ull) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    return (unsigned int)(z ^ (z >> 32));
}

// invert = 0: the pattern; invert = 1: the poison (~pattern).
extern "C" __global__ void fb_fill(unsigned int *buf, fb_u64 words, fb_u64 seed, unsigned int invert)
{
    const unsigned int mask = invert ? 0xFFFFFFFFu : 0u;
    const fb_u64 stride = (fb_u64)blockDim.x * gridDim.x;
    for (fb_u64 i = (fb_u64)blockIdx.x * blockDim.x + threadIdx.x; i < words; i += stride) {
        buf[i] = fb_pattern(seed, i) ^ mask;
    }
}

// result[0] += number of words that differ from the pattern; result[1] = min(result[1], first bad index).
// The host sets result[0] = 0 and result[1] = ~0 before the launch. Counts are reduced per warp first, so a
// fully wrong buffer costs one atomic per warp, not per word.
extern "C" __global__ void fb_verify(const unsigned int *buf, fb_u64 words, fb_u64 seed, fb_u64 *result)
{
    const fb_u64 stride = (fb_u64)blockDim.x * gridDim.x;
    fb_u64 bad = 0;
    fb_u64 first_bad = ~0ull;
    for (fb_u64 i = (fb_u64)blockIdx.x * blockDim.x + threadIdx.x; i < words; i += stride) {
        if (buf[i] != fb_pattern(seed, i)) {
            if (bad == 0) {
                first_bad = i;
            }
            ++bad;
        }
    }
    for (int offset = 16; offset > 0; offset /= 2) {
        bad += __shfl_down_sync(0xFFFFFFFFu, bad, offset);
        const fb_u64 other = __shfl_down_sync(0xFFFFFFFFu, first_bad, offset);
        first_bad = other < first_bad ? other : first_bad;
    }
    if ((threadIdx.x & 31u) == 0 && bad != 0) {
        atomicAdd(result, bad);
        atomicMin(result + 1, first_bad);
    }
}

// Flips the bits of one word: the self-test plants a mismatch with it and checks that fb_verify finds it.
extern "C" __global__ void fb_corrupt(unsigned int *buf, fb_u64 index)
{
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        buf[index] = ~buf[index];
    }
}
