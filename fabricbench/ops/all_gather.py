import numpy as np

from fabricbench.ops.base import Call, Layout, Op, aligned_block


class AllGather(Op):
    name, primitive = "all_gather", "all_gather"
    description = "every rank ends with all ranks' blocks; size = output bytes; busbw = algbw × (n-1)/n"

    def layout(self, size_bytes, itemsize, nranks, rank):
        block = aligned_block(size_bytes, itemsize, nranks)
        return Layout(block, block * nranks, block, block * nranks * itemsize,
                      send_inplace_offset=rank * block)

    def busbw_factor(self, nranks):
        return (nranks - 1) / nranks

    def run(self, call: Call):
        call.backend.all_gather(call.send, call.recv)

    def input(self, pattern, lay, rank, nranks, root):
        return pattern.values(rank, rank * lay.count, lay.count)

    def expected(self, pattern, lay, rank, nranks, root):
        return np.concatenate([pattern.values(q, q * lay.count, lay.count) for q in range(nranks)])
