// The gate (nvbandwidth's method): a one-thread kernel that spins until the host sets a flag in host-mapped
// (pinned, portable) memory. The timed copies and their start/end events are queued behind it on the same
// stream while it spins, so launch and enqueue cost are not part of the measured time. Both directions of a
// bidirectional test queue behind gates that read the same flag, so they start together.
//
// The spin is bounded: after timeout_ns (read from the GPU's global nanosecond timer) the gate gives up and
// sets *expired = 1, so a host that never releases it (or that blocked while enqueueing) cannot hang the GPU;
// the host discards a sample whose gate expired.
// Self-contained (no #include) so that NVRTC compiles it without the toolkit's headers.

typedef unsigned long long fb_u64;

__device__ __forceinline__ fb_u64 fb_globaltimer_ns()
{
    fb_u64 t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

extern "C" __global__ void fb_gate(const volatile int *flag, volatile int *expired, fb_u64 timeout_ns)
{
    if (threadIdx.x != 0 || blockIdx.x != 0) {
        return;
    }
    const fb_u64 start = fb_globaltimer_ns();
    while (*flag == 0) {
        if (fb_globaltimer_ns() - start > timeout_ns) {
            *expired = 1;
            break;
        }
        __nanosleep(100);
    }
}
