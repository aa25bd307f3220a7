//! The kernel contract: every structure member and enum value the probes read, in one
//! table. From it come the offsets the programs get in their configuration
//! ([`KernelOffsets`]), the lookups the daemon makes in the running kernel's BTF
//! ([`KernelOffsets::MEMBERS`], [`KernelOffsets::ENUM_VALUES`]) and the `struct.member`
//! keys `status` shows ([`KernelOffsets::by_member`]). A member the probes start to read
//! is one more line here, and nothing else can forget it.
//!
//! No offset is compiled in (Rust eBPF has no CO-RE relocations): the daemon resolves
//! each line from `/sys/kernel/btf/vmlinux`, so one build runs on every kernel.

/// One member the probes read: `strukt.names[0]`, or on kernels that spell it
/// otherwise the first of `names` this kernel has (renames, newest name first). A
/// name descends through anonymous structs and unions on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelMember {
    /// The [`KernelOffsets`] field that holds its offset.
    pub field: &'static str,
    pub strukt: &'static str,
    pub names: &'static [&'static str],
    /// The probes cope without it (its offset is then 0); a missing required member
    /// stops the daemon.
    pub optional: bool,
}

impl KernelMember {
    /// The newest spelling, which `status` shows.
    pub fn name(&self) -> &'static str {
        self.names[0]
    }
}

/// One enumerator the probes compare with: `enumeration::name`, [`ITER_UNKNOWN`] where
/// this kernel has no such value or lacks member `needs` (whose content it describes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelEnumValue {
    pub field: &'static str,
    pub enumeration: &'static str,
    pub name: &'static str,
    /// The [`KernelMember::field`] the value is meaningless without.
    pub needs: Option<&'static str>,
}

/// An `iter_type` value no `u8` member holds: the kind does not exist on this kernel.
pub const ITER_UNKNOWN: u32 = u32::MAX;

/// `optional` or nothing, as a `bool` (anything else does not compile).
macro_rules! optional {
    () => {
        false
    };
    (optional) => {
        true
    };
}

/// Generates [`KernelOffsets`] and its lookup tables from lines of the form
///
/// ```text
/// field = struct.member;                        // required
/// field = struct.newest | older, optional;      // renamed, may be missing
/// field = enumeration::VALUE, needs field;      // an enumerator
/// ```
macro_rules! kernel_members {
    (
        members {
            $(
                $(#[doc = $mdoc:literal])*
                $field:ident = $strukt:ident . $name:ident $(| $alt:ident)* $(, $opt:ident)?;
            )*
        }
        enums {
            $(
                $(#[doc = $edoc:literal])*
                $efield:ident = $enumeration:ident :: $value:ident $(, needs $needs:ident)?;
            )*
        }
    ) => {
        /// Kernel structure member offsets in bytes, then enum values: one field per
        /// line of the table, in its order.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct KernelOffsets {
            $( $(#[doc = $mdoc])* pub $field: u32, )*
            $( $(#[doc = $edoc])* pub $efield: u32, )*
        }

        impl KernelOffsets {
            pub const MEMBERS: &'static [KernelMember] = &[$(
                KernelMember {
                    field: stringify!($field),
                    strukt: stringify!($strukt),
                    names: &[stringify!($name) $(, stringify!($alt))*],
                    optional: optional!($($opt)?),
                },
            )*];

            pub const ENUM_VALUES: &'static [KernelEnumValue] = &[$(
                KernelEnumValue {
                    field: stringify!($efield),
                    enumeration: stringify!($enumeration),
                    name: stringify!($value),
                    needs: kernel_members!(@needs $($needs)?),
                },
            )*];

            /// The member offsets, in [`Self::MEMBERS`] order.
            pub fn member_offsets(&self) -> [u32; KernelOffsets::MEMBERS.len()] {
                [$(self.$field),*]
            }

            /// Builds the offsets from values in table order.
            pub fn from_table(
                members: [u32; KernelOffsets::MEMBERS.len()],
                enum_values: [u32; KernelOffsets::ENUM_VALUES.len()],
            ) -> Self {
                let [$($field),*] = members;
                let [$($efield),*] = enum_values;
                Self { $($field,)* $($efield,)* }
            }
        }

        // `needs` must name a member field.
        const _: fn(&KernelOffsets) = |o| { $($( let _ = o.$needs; )?)* };
    };
    (@needs) => { None };
    (@needs $needs:ident) => { Some(stringify!($needs)) };
}

kernel_members! {
    members {
        task_files = task_struct.files;
        files_fdt = files_struct.fdt;
        fdtable_max_fds = fdtable.max_fds;
        fdtable_fd = fdtable.fd;
        /// The descriptor table embedded in `files_struct`, used until a process opens
        /// more than 64 descriptors.
        files_fd_array = files_struct.fd_array;
        file_f_inode = file.f_inode;
        file_private_data = file.private_data;
        inode_i_mode = inode.i_mode;
        inode_i_rdev = inode.i_rdev;
        inode_i_sb = inode.i_sb;
        /// Who made a pipe (the creator's fsuid): see `kernel::pipe_made_by_current_user`.
        inode_i_uid = inode.i_uid;
        tty_file_private_tty = tty_file_private.tty;
        tty_index = tty_struct.index;
        tty_driver = tty_struct.driver;
        tty_driver_data = tty_struct.driver_data;
        tty_driver_major = tty_driver.major;
        tty_driver_minor_start = tty_driver.minor_start;
        pts_fs_info_sb = pts_fs_info.sb;
        super_block_s_dev = super_block.s_dev;
        kiocb_ki_filp = kiocb.ki_filp;
        iov_iter_count = iov_iter.count;
        /// `iov_iter.iter_type`, and where a write's user buffer is: `ubuf` for
        /// `ITER_UBUF` (write(2) since 6.0), `__iov` (`iov` before 6.4) for
        /// `ITER_IOVEC`. Optional: without them every master write counts as input
        /// on the fentry backend.
        iov_iter_type = iov_iter.iter_type, optional;
        iov_iter_ubuf = iov_iter.ubuf, optional;
        iov_iter_iov = iov_iter.__iov | iov, optional;
        task_signal = task_struct.signal;
        signal_tty = signal_struct.tty;
        /// A console's line discipline, and n_tty's position in its input
        /// (`read_tail`, which only a read that takes input moves) and the ring the
        /// input waits in (`read_buf`): see `kernel::console_input_taken` in the
        /// probes.
        tty_ldisc = tty_struct.ldisc;
        tty_ldisc_ops = tty_ldisc.ops;
        tty_ldisc_ops_num = tty_ldisc_ops.num;
        tty_disc_data = tty_struct.disc_data;
        n_tty_read_tail = n_tty_data.read_tail;
        n_tty_read_buf = n_tty_data.read_buf;
        /// A system call's first argument in the registers saved at its entry
        /// (x86_64 `di`; arm64 `orig_x0`, as `x0` holds the return value by the
        /// exit): the descriptor of a read, at its exit.
        pt_regs_arg0 = pt_regs.di | orig_x0;
        task_pid = task_struct.pid;
        task_tgid = task_struct.tgid;
        /// `signal_struct.live`: threads of the process not yet exiting (an
        /// `atomic_t`, whose counter is its only member).
        signal_live = signal_struct.live;
        /// The process's `struct pid`s by `enum pid_type`: the thread group's is
        /// what a socket records as its maker.
        signal_pids = signal_struct.pids;
        socket_sk = socket.sk;
        sock_sk_common = sock.__sk_common;
        sock_common_skc_family = sock_common.skc_family;
        /// The process that made a socket pair, or that connected to a listening
        /// socket (`init_peercred`): see `kernel::sock_made_by_current`.
        sock_sk_peer_pid = sock.sk_peer_pid;
        /// `sock.sk_protocol` (a `u16` since 5.6), read where `sock_recv_length`
        /// exists (6.3+).
        sock_sk_protocol = sock.sk_protocol, optional;
    }
    enums {
        /// Values of `enum iter_type` on this kernel (the order changed in 6.4). Before
        /// 5.14 the kind shared a field with the direction: no `iov_iter.iter_type`
        /// to compare them with.
        iter_ubuf = iter_type::ITER_UBUF, needs iov_iter_type;
        iter_iovec = iter_type::ITER_IOVEC, needs iov_iter_type;
        /// The index of the thread group's pid in `signal_struct.pids`.
        pidtype_tgid = pid_type::PIDTYPE_TGID, needs signal_pids;
    }
}

impl KernelOffsets {
    /// Every member with its offset: what `status` shows, keyed by the member's
    /// [`Display`](core::fmt::Display) (`struct.member`).
    pub fn by_member(&self) -> impl Iterator<Item = (&'static KernelMember, u32)> {
        Self::MEMBERS.iter().zip(self.member_offsets())
    }
}

/// `struct.member`, as BTF names it (a renamed member by its newest name).
impl core::fmt::Display for KernelMember {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}", self.strukt, self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_a_field_in_table_order() {
        let mut offsets = [0; KernelOffsets::MEMBERS.len()];
        for (i, o) in offsets.iter_mut().enumerate() {
            *o = i as u32 + 1;
        }
        let built = KernelOffsets::from_table(offsets, [100, 200, 300]);
        assert_eq!(built.member_offsets(), offsets);
        assert_eq!(built.task_files, 1);
        assert_eq!(built.sock_sk_protocol, offsets.len() as u32);
        assert_eq!(
            (built.iter_ubuf, built.iter_iovec, built.pidtype_tgid),
            (100, 200, 300)
        );
        // The struct is the table: nothing else in it.
        assert_eq!(
            core::mem::size_of::<KernelOffsets>(),
            4 * (KernelOffsets::MEMBERS.len() + KernelOffsets::ENUM_VALUES.len())
        );
    }

    #[test]
    fn renames_and_optional_members_are_in_the_table() {
        let iov = KernelOffsets::MEMBERS
            .iter()
            .find(|m| m.field == "iov_iter_iov")
            .unwrap();
        assert_eq!((iov.strukt, iov.names), ("iov_iter", &["__iov", "iov"][..]));
        assert!(iov.optional);
        assert_eq!(iov.name(), "__iov");
        let files = &KernelOffsets::MEMBERS[0];
        assert_eq!(
            (files.field, files.strukt, files.names),
            ("task_files", "task_struct", &["files"][..])
        );
        assert!(!files.optional);
        for e in KernelOffsets::ENUM_VALUES {
            let needs = e.needs.unwrap();
            assert!(
                KernelOffsets::MEMBERS.iter().any(|m| m.field == needs),
                "{e:?}"
            );
        }
    }

    #[test]
    fn keys_are_struct_dot_member() {
        extern crate std;
        use std::string::ToString as _;
        let offsets = KernelOffsets {
            tty_index: 32,
            ..KernelOffsets::default()
        };
        let keys: std::vec::Vec<_> = offsets
            .by_member()
            .map(|(m, offset)| (m.to_string(), offset))
            .collect();
        assert!(keys.contains(&("tty_struct.index".to_string(), 32)));
        assert!(keys.contains(&("iov_iter.__iov".to_string(), 0)));
        assert!(!keys.iter().any(|(k, _)| k == "iov_iter.iov"));
        assert_eq!(keys.len(), KernelOffsets::MEMBERS.len());
    }
}
