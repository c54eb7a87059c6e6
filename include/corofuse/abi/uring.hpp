// FUSE-over-io_uring: the structs and commands of protocol 7.42 (Linux 6.14+) and the buffer pool
// and zero-copy additions of 7.46 (Linux 7.3+). Their layout: docs/kernel.md, "Layouts"; how they
// are used: "The 7.42 ring" and "Buffer pools and zero-copy (7.46)".
#pragma once

#include <cstddef>
#include <cstdint>

#include "corofuse/abi/structs.hpp"

namespace corofuse::abi {

inline constexpr std::size_t uring_in_out_header_size = 128;  // in_header or out_header lives here
inline constexpr std::size_t uring_op_in_out_size = 128;      // the per-opcode struct lives here

// Subcommands, in sqe->cmd_op of an IORING_OP_URING_CMD on the /dev/fuse fd.
enum class uring_cmd : std::uint32_t {
  invalid = 0,
  register_entry = 1,    // hand the kernel an entry's buffers and wait for a request
  commit_and_fetch = 2,  // answer the request in an entry and wait for the next
  add_queue = 3,         // 7.46: create a queue (optionally zero-copy)
  add_bufpool = 4,       // 7.46: give a queue its payload buffer pool
};

// uring_cmd_req.flags of ADD_QUEUE.
inline constexpr std::uint64_t uring_zero_copy = 1ull << 0;
// uring_ent_in_out.flags of a request: its data is in the client's pages at the entry's slot.
inline constexpr std::uint64_t uring_ent_zero_copy = 1ull << 0;

// The kernel-owned trailer of an entry's header buffer.
struct uring_ent_in_out {
  u64 flags;       // uring_ent_zero_copy
  u64 commit_id;   // the request's unique; echoed back in the commit
  u32 payload_sz;  // request: payload bytes; reply: bytes the server wrote
  u32 offset;      // 7.46: the request's buffer in the pool, as a byte offset
  u64 reserved;
};
static_assert(sizeof(uring_ent_in_out) == 32);
static_assert(offsetof(uring_ent_in_out, commit_id) == 8 && offsetof(uring_ent_in_out, payload_sz) == 16 &&
              offsetof(uring_ent_in_out, offset) == 20 && offsetof(uring_ent_in_out, reserved) == 24);

// An entry's header buffer (iovec 0 of REGISTER).
struct uring_req_header {
  alignas(8) unsigned char in_out[uring_in_out_header_size];
  unsigned char op_in[uring_op_in_out_size];
  uring_ent_in_out ring_ent_in_out;
};
static_assert(sizeof(uring_req_header) == 288);
static_assert(offsetof(uring_req_header, op_in) == 128 && offsetof(uring_req_header, ring_ent_in_out) == 256);
static_assert(sizeof(in_header) <= uring_in_out_header_size && sizeof(out_header) <= uring_in_out_header_size);

// The command area of the 128-byte SQE (at SQE offset 48): 24 bytes on 7.42, 40 on 7.46.
struct uring_cmd_req {
  u64 flags;
  u64 commit_id;
  u16 qid;
  u8 padding[6];
  union {
    struct {
      u64 uaddr;  // ADD_BUFPOOL: the pool's address
      u32 len;    // and length
      u32 reserved;
    } bufpool;
    u16 ent_zero_copy_buf_index;  // REGISTER on a zero-copy queue: the entry's fixed-buffer slot
  };
};
static_assert(sizeof(uring_cmd_req) == 40);
static_assert(offsetof(uring_cmd_req, commit_id) == 8 && offsetof(uring_cmd_req, qid) == 16 && offsetof(uring_cmd_req, bufpool) == 24 &&
              offsetof(uring_cmd_req, ent_zero_copy_buf_index) == 24);
inline constexpr std::size_t uring_cmd_req_size_7_42 = 24;
// The kernel reads the command area from SQE offset 48; a 128-byte SQE leaves it 80 bytes.
inline constexpr std::size_t sqe_cmd_offset = 48;
static_assert(sqe_cmd_offset + sizeof(uring_cmd_req) <= 128);

}  // namespace corofuse::abi
