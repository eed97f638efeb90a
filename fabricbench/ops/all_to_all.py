import numpy as np

from fabricbench.ops.base import Call, Layout, Op, aligned_block


class AllToAll(Op):
    name, primitive = "all_to_all", "all_to_all"
    in_place_supported = False
    description = "rank r sends its block q to rank q; size = buffer bytes; busbw = algbw × (n-1)/n"

    def layout(self, size_bytes, itemsize, nranks, rank):
        block = aligned_block(size_bytes, itemsize, nranks)
        return Layout(block * nranks, block * nranks, block, block * nranks * itemsize)

    def busbw_factor(self, nranks):
        return (nranks - 1) / nranks

    def run(self, call: Call):
        call.backend.all_to_all(call.send, call.recv)

    def expected(self, pattern, lay, rank, nranks, root):
        # Block q of rank r's output is block r of rank q's input (values indexed globally per sender).
        return np.concatenate([pattern.values(q, rank * lay.count, lay.count) for q in range(nranks)])
