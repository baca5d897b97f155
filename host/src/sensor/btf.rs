//! Kernel struct field offsets from BTF (`/sys/kernel/btf/vmlinux`).
//!
//! aya parses BTF for its own relocations, but its type table is not public
//! (`aya-obj` keeps `type_by_id` and struct members crate-private), so this
//! is a small reader of the parts we need: the header, the type section
//! (every kind, to step over it), struct and union members, typedef and
//! qualifier chains, and the string section. It answers "byte offset of
//! `task_struct.files`", following anonymous struct and union members the
//! way C does, and names the missing struct or field when BTF lacks one.

use std::path::{Path, PathBuf};

use monitor_common::{KernelOffsets, SockOffsets, SyscallAbi};

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Errors reading BTF or finding a field in it.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read (the kernel lacks `CONFIG_DEBUG_INFO_BTF`, or no permission).
    #[error("cannot read kernel BTF at {path}")]
    ReadBtf {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The data is not BTF, or is cut short or inconsistent.
    #[error("malformed BTF: {what} (at byte {offset})")]
    ParseBtf {
        /// What was wrong.
        what: &'static str,
        /// Where in the data.
        offset: usize,
    },
    /// BTF has no struct of that name.
    #[error("kernel BTF has no struct {0}")]
    FindStruct(String),
    /// The struct has no field of that name (directly or in an anonymous member).
    #[error("kernel BTF: struct {strukt} has no field {field}")]
    FindField {
        /// The struct searched.
        strukt: String,
        /// The field asked for.
        field: String,
    },
    /// The field is a bitfield, which the programs cannot read by byte offset.
    #[error("kernel BTF: {strukt}.{field} is a bitfield")]
    BitfieldField {
        /// The struct.
        strukt: String,
        /// The field.
        field: String,
    },
    /// The field is not an integer of the width the programs read.
    #[error("kernel BTF: {strukt}.{field} is not a {bytes}-byte integer")]
    CheckFieldWidth {
        /// The struct.
        strukt: String,
        /// The field.
        field: String,
        /// The width the programs read.
        bytes: u32,
    },
}

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;
const KIND_MAX: u32 = 19;

#[derive(Debug, Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// Bit offset from the start of the enclosing struct.
    bit_offset: u32,
    /// Non-zero for a bitfield.
    bitfield_size: u32,
}

#[derive(Debug, Clone)]
struct Type {
    name_off: u32,
    kind: u32,
    /// For qualifiers and typedefs: the referred type.
    type_ref: u32,
    members: Vec<Member>,
}

/// A parsed BTF blob (only what offset lookups need).
#[derive(Debug)]
pub struct Btf {
    /// Index = type id; id 0 is `void`.
    types: Vec<Type>,
    strings: Vec<u8>,
}

fn u32_at(data: &[u8], offset: usize) -> Result<u32, BtfError> {
    data.get(offset..offset + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::ParseBtf {
            what: "truncated",
            offset,
        })
}

impl Btf {
    /// Reads and parses a BTF file.
    ///
    /// # Errors
    /// [`BtfError::ReadBtf`] when the file cannot be read, [`BtfError::ParseBtf`] when it is not BTF.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::ReadBtf {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses little-endian BTF data (the only byte order of our targets).
    ///
    /// # Errors
    /// [`BtfError::ParseBtf`] naming what is wrong and where.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let magic = data
            .get(0..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(BtfError::ParseBtf {
                what: "truncated header",
                offset: 0,
            })?;
        if magic != MAGIC {
            return Err(BtfError::ParseBtf {
                what: "bad magic (not little-endian BTF)",
                offset: 0,
            });
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let type_start = hdr_len.checked_add(type_off).ok_or(BtfError::ParseBtf {
            what: "type section offset overflows",
            offset: 8,
        })?;
        let type_end = type_start
            .checked_add(type_len)
            .filter(|&end| end <= data.len())
            .ok_or(BtfError::ParseBtf {
                what: "type section out of bounds",
                offset: 12,
            })?;
        let str_start = hdr_len.checked_add(str_off).ok_or(BtfError::ParseBtf {
            what: "string section offset overflows",
            offset: 16,
        })?;
        let str_end = str_start
            .checked_add(str_len)
            .filter(|&end| end <= data.len())
            .ok_or(BtfError::ParseBtf {
                what: "string section out of bounds",
                offset: 20,
            })?;
        let strings = data[str_start..str_end].to_vec();

        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            type_ref: 0,
            members: Vec::new(),
        }];
        let mut pos = type_start;
        while pos < type_end {
            let name_off = u32_at(data, pos)?;
            let info = u32_at(data, pos + 4)?;
            let size_or_type = u32_at(data, pos + 8)?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            pos += 12;
            if kind == 0 || kind > KIND_MAX {
                return Err(BtfError::ParseBtf {
                    what: "unknown type kind",
                    offset: pos - 8,
                });
            }
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    members.reserve(vlen);
                    for i in 0..vlen {
                        let at = pos + i * 12;
                        let offset = u32_at(data, at + 8)?;
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (offset & 0x00ff_ffff, offset >> 24)
                        } else {
                            (offset, 0)
                        };
                        members.push(Member {
                            name_off: u32_at(data, at)?,
                            type_id: u32_at(data, at + 4)?,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                    vlen * 12
                }
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                _ => 0,
            };
            pos += extra;
            types.push(Type {
                name_off,
                kind,
                type_ref: size_or_type,
                members,
            });
        }
        if pos != type_end {
            return Err(BtfError::ParseBtf {
                what: "type section ends inside a type",
                offset: pos,
            });
        }
        Ok(Self { types, strings })
    }

    fn name(&self, offset: u32) -> &[u8] {
        let start = offset as usize;
        let Some(rest) = self.strings.get(start..) else {
            return b"";
        };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.type_ref;
                }
                _ => break,
            }
        }
        id
    }

    fn struct_id(&self, name: &str) -> Result<u32, BtfError> {
        self.types
            .iter()
            .enumerate()
            .find(|(_, t)| {
                t.kind == KIND_STRUCT
                    && !t.members.is_empty()
                    && self.name(t.name_off) == name.as_bytes()
            })
            .map(|(id, _)| id as u32)
            .ok_or_else(|| BtfError::FindStruct(name.to_owned()))
    }

    /// Bit offset of `field` inside struct/union `id`, searching anonymous members.
    fn find_member(&self, id: u32, field: &str, depth: u32) -> Option<(u32, Member)> {
        let t = self.types.get(id as usize)?;
        if depth > 8 || !matches!(t.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for m in &t.members {
            let name = self.name(m.name_off);
            if name == field.as_bytes() {
                return Some((m.bit_offset, *m));
            }
            if name.is_empty()
                && let Some((inner, member)) =
                    self.find_member(self.resolve(m.type_id), field, depth + 1)
            {
                return Some((m.bit_offset + inner, member));
            }
        }
        None
    }

    /// Byte offset of a possibly nested field, e.g. `("mnt_namespace", "ns.inum")`.
    ///
    /// # Errors
    /// [`BtfError::FindStruct`] / [`BtfError::FindField`] naming what is missing;
    /// [`BtfError::BitfieldField`] for a bitfield.
    pub fn field_offset(&self, strukt: &str, path: &str) -> Result<u32, BtfError> {
        self.field(strukt, path).map(|(offset, _)| offset)
    }

    /// Byte offset of a possibly nested field that must be an integer (or
    /// enum) of `bytes` bytes, through typedefs such as `__be16`.
    ///
    /// # Errors
    /// As [`Btf::field_offset`], and [`BtfError::CheckFieldWidth`] when the
    /// field is not such an integer.
    pub fn int_field_offset(&self, strukt: &str, path: &str, bytes: u32) -> Result<u32, BtfError> {
        let (offset, type_id) = self.field(strukt, path)?;
        match self.types.get(type_id as usize) {
            Some(t) if matches!(t.kind, KIND_INT | KIND_ENUM) && t.type_ref == bytes => Ok(offset),
            _ => Err(BtfError::CheckFieldWidth {
                strukt: strukt.to_owned(),
                field: path.to_owned(),
                bytes,
            }),
        }
    }

    /// Byte offset and (resolved) type id of a possibly nested field.
    fn field(&self, strukt: &str, path: &str) -> Result<(u32, u32), BtfError> {
        let mut id = self.struct_id(strukt)?;
        let mut total_bits = 0;
        for field in path.split('.') {
            let (bits, member) =
                self.find_member(id, field, 0)
                    .ok_or_else(|| BtfError::FindField {
                        strukt: strukt.to_owned(),
                        field: path.to_owned(),
                    })?;
            if member.bitfield_size != 0 || bits % 8 != 0 {
                return Err(BtfError::BitfieldField {
                    strukt: strukt.to_owned(),
                    field: path.to_owned(),
                });
            }
            total_bits += bits;
            id = self.resolve(member.type_id);
        }
        Ok((total_bits / 8, id))
    }

    /// The offsets the kernel programs walk.
    ///
    /// # Errors
    /// The first struct or field that BTF lacks.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        Ok(KernelOffsets {
            task_real_parent: self.field_offset("task_struct", "real_parent")?,
            task_tgid: self.field_offset("task_struct", "tgid")?,
            task_files: self.field_offset("task_struct", "files")?,
            task_nsproxy: self.field_offset("task_struct", "nsproxy")?,
            task_start_time: self.field_offset("task_struct", "start_time")?,
            task_exit_code: self.field_offset("task_struct", "exit_code")?,
            files_fdt: self.field_offset("files_struct", "fdt")?,
            fdtable_max_fds: self.field_offset("fdtable", "max_fds")?,
            fdtable_fd: self.field_offset("fdtable", "fd")?,
            file_inode: self.field_offset("file", "f_inode")?,
            inode_ino: self.field_offset("inode", "i_ino")?,
            inode_sb: self.field_offset("inode", "i_sb")?,
            sb_dev: self.field_offset("super_block", "s_dev")?,
            nsproxy_mnt_ns: self.field_offset("nsproxy", "mnt_ns")?,
            mnt_ns_inum: self.field_offset("mnt_namespace", "ns.inum")?,
            ready: 1,
        })
    }

    /// The `struct sock` offsets the connect program reads. `sk_protocol`
    /// has been a plain `u16` since Linux 5.6 (a bitfield before, which is
    /// refused here with a message naming it).
    ///
    /// # Errors
    /// The first struct or field that BTF lacks, or a field of another width.
    pub fn sock_offsets(&self) -> Result<SockOffsets, BtfError> {
        let common = |field: &str, bytes: Option<u32>| {
            let path = format!("__sk_common.{field}");
            match bytes {
                Some(bytes) => self.int_field_offset("sock", &path, bytes),
                None => self.field_offset("sock", &path),
            }
        };
        Ok(SockOffsets {
            protocol: self.int_field_offset("sock", "sk_protocol", 2)?,
            family: common("skc_family", Some(2))?,
            dport: common("skc_dport", Some(2))?,
            num: common("skc_num", Some(2))?,
            daddr: common("skc_daddr", Some(4))?,
            rcv_saddr: common("skc_rcv_saddr", Some(4))?,
            v6_daddr: common("skc_v6_daddr", None)?,
            v6_rcv_saddr: common("skc_v6_rcv_saddr", None)?,
            ready: 1,
        })
    }
}

/// `pt_regs` field names of the syscall number and the first three
/// arguments, as they are at syscall exit, for this architecture.
#[cfg(target_arch = "x86_64")]
const REGS: (&str, [&str; 3]) = ("orig_ax", ["di", "si", "dx"]);
#[cfg(target_arch = "aarch64")]
const REGS: (&str, [&str; 3]) = ("syscallno", ["orig_x0", "regs", "regs"]);

#[cfg(target_arch = "x86_64")]
const NR_OPEN: u64 = libc::SYS_open as u64;
#[cfg(not(target_arch = "x86_64"))]
const NR_OPEN: u64 = monitor_common::NO_SYSCALL;

impl Btf {
    /// The syscall numbers and register layout `raw_syscalls:sys_exit` needs.
    ///
    /// # Errors
    /// The first struct or field that BTF lacks.
    pub fn syscall_abi(&self) -> Result<SyscallAbi, BtfError> {
        let (nr, args) = REGS;
        let mut arg_offsets = [0u32; 3];
        for (i, name) in args.iter().enumerate() {
            arg_offsets[i] = self.field_offset("pt_regs", name)?;
        }
        if cfg!(target_arch = "aarch64") {
            // arm64 keeps arguments 1 and 2 in `regs[1]` and `regs[2]`.
            arg_offsets[1] += 8;
            arg_offsets[2] += 16;
        }
        Ok(SyscallAbi {
            nr_read: libc::SYS_read as u64,
            nr_pread64: libc::SYS_pread64 as u64,
            nr_readv: libc::SYS_readv as u64,
            nr_close: libc::SYS_close as u64,
            nr_open: NR_OPEN,
            nr_openat: libc::SYS_openat as u64,
            nr_openat2: libc::SYS_openat2 as u64,
            regs_nr: self.field_offset("pt_regs", nr)?,
            regs_arg0: arg_offsets[0],
            regs_arg1: arg_offsets[1],
            regs_arg2: arg_offsets[2],
            file_dentry: self.field_offset("file", "f_path.dentry")?,
            dentry_name: self.field_offset("dentry", "d_name.name")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny BTF blob: `struct outer { int a; union { int b; struct inner c; }; }`
    /// with `struct inner { int pad; int d; }`.
    fn tiny_btf() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0inner\0c\0pad\0d\0".to_vec();
        let off = |s: &str| {
            let needle = format!("\0{s}\0");
            (strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap()
                + 1) as u32
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int (4 bytes)
        push(&[off("int"), KIND_INT << 24, 4, 32]);
        // 2: struct inner { int pad @0; int d @32 }
        push(&[off("inner"), (KIND_STRUCT << 24) | 2, 8]);
        push(&[off("pad"), 1, 0, off("d"), 1, 32]);
        // 3: anonymous union { int b; struct inner c; }
        push(&[0, (KIND_UNION << 24) | 2, 8]);
        push(&[off("b"), 1, 0, off("c"), 2, 0]);
        // 4: struct outer { int a @0; union @64 }
        push(&[off("outer"), (KIND_STRUCT << 24) | 2, 16]);
        push(&[off("a"), 1, 0, 0, 3, 64]);
        let mut data = Vec::new();
        data.extend_from_slice(&MAGIC.to_le_bytes());
        data.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            data.extend_from_slice(&w.to_le_bytes());
        }
        data.extend_from_slice(&types);
        data.extend_from_slice(&strings);
        data
    }

    #[test]
    fn finds_direct_anonymous_and_nested_fields() {
        let btf = Btf::parse(&tiny_btf()).unwrap();
        assert_eq!(btf.field_offset("outer", "a").unwrap(), 0);
        assert_eq!(btf.field_offset("outer", "b").unwrap(), 8);
        assert_eq!(btf.field_offset("outer", "c.d").unwrap(), 12);
    }

    #[test]
    fn checks_an_integer_fields_width() {
        let btf = Btf::parse(&tiny_btf()).unwrap();
        assert_eq!(btf.int_field_offset("outer", "c.d", 4).unwrap(), 12);
        let err = btf
            .int_field_offset("outer", "a", 2)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "kernel BTF: outer.a is not a 2-byte integer");
        assert!(matches!(
            btf.int_field_offset("outer", "c", 4),
            Err(BtfError::CheckFieldWidth { .. })
        ));
    }

    #[test]
    fn names_what_is_missing() {
        let btf = Btf::parse(&tiny_btf()).unwrap();
        let err = btf.field_offset("outer", "zz").unwrap_err().to_string();
        assert_eq!(err, "kernel BTF: struct outer has no field zz");
        let err = btf.field_offset("nope", "a").unwrap_err().to_string();
        assert_eq!(err, "kernel BTF has no struct nope");
    }

    #[test]
    fn rejects_truncated_and_foreign_data() {
        let data = tiny_btf();
        for cut in [0, 1, 10, 23, 30, data.len() - 1] {
            assert!(Btf::parse(&data[..cut]).is_err(), "cut at {cut} parsed");
        }
        let mut bad = data.clone();
        bad[0] = 0;
        assert!(matches!(Btf::parse(&bad), Err(BtfError::ParseBtf { .. })));
    }

    #[test]
    fn reads_the_running_kernels_offsets() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            eprintln!("skipping: {VMLINUX_BTF} is absent on this kernel");
            return;
        }
        let btf = Btf::from_file(path).unwrap();
        let offsets = btf.kernel_offsets().unwrap();
        assert_eq!(offsets.ready, 1);
        let abi = btf.syscall_abi().unwrap();
        assert_ne!(abi.regs_nr, abi.regs_arg0);
        assert_ne!(abi.nr_openat, monitor_common::NO_SYSCALL);
        assert_ne!(offsets.task_files, 0);
        assert_ne!(offsets.task_tgid, offsets.task_real_parent);
        let sock = btf.sock_offsets().unwrap();
        assert_eq!(sock.ready, 1);
        // `__sk_common` leads `struct sock`; `skc_num` follows `skc_dport`.
        assert_eq!(sock.num, sock.dport + 2);
        assert!(sock.protocol > sock.v6_rcv_saddr);
    }
}
