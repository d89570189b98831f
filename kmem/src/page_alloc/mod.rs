//! The zoned buddy page allocator (`mm/page_alloc.c`, `include/linux/mmzone.h`).
//!
//! (Being written; see the issue tracker.)

/// A zone type (`enum zone_type`), in Linux's order.
///
/// Which types a machine has depends on its layout: an x86_64-like machine
/// has DMA, DMA32, Normal, Movable and Device; a machine with a lowmem limit
/// (32-bit style) has DMA, Normal, HighMem, Movable and Device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ZoneType {
    /// `ZONE_DMA`: below 16 MiB, for ISA-style DMA.
    Dma = 0,
    /// `ZONE_DMA32`: below 4 GiB, for 32-bit DMA.
    Dma32 = 1,
    /// `ZONE_NORMAL`: directly mapped memory.
    Normal = 2,
    /// `ZONE_HIGHMEM`: above the lowmem limit, reached through kmap.
    HighMem = 3,
    /// `ZONE_MOVABLE`: only movable allocations (`movablecore=`).
    Movable = 4,
    /// `ZONE_DEVICE`: device memory, always empty here.
    Device = 5,
}

/// Number of [`ZoneType`] values.
pub const MAX_NR_ZONE_TYPES: usize = 6;

impl ZoneType {
    /// All zone types in order.
    pub const ALL: [ZoneType; MAX_NR_ZONE_TYPES] = [
        ZoneType::Dma,
        ZoneType::Dma32,
        ZoneType::Normal,
        ZoneType::HighMem,
        ZoneType::Movable,
        ZoneType::Device,
    ];

    /// The name Linux prints (`"DMA"`, `"DMA32"`, `"Normal"`, `"HighMem"`,
    /// `"Movable"`, `"Device"`).
    pub const fn name(self) -> &'static str {
        match self {
            ZoneType::Dma => "DMA",
            ZoneType::Dma32 => "DMA32",
            ZoneType::Normal => "Normal",
            ZoneType::HighMem => "HighMem",
            ZoneType::Movable => "Movable",
            ZoneType::Device => "Device",
        }
    }
}

/// A migratetype (`enum migratetype`): pageblocks are grouped by mobility so
/// that unmovable allocations do not pin down every large block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MigrateType {
    /// `MIGRATE_UNMOVABLE`
    Unmovable = 0,
    /// `MIGRATE_MOVABLE`
    Movable = 1,
    /// `MIGRATE_RECLAIMABLE`
    Reclaimable = 2,
    /// `MIGRATE_HIGHATOMIC` (shares the value `MIGRATE_PCPTYPES`)
    HighAtomic = 3,
    /// `MIGRATE_ISOLATE`
    Isolate = 4,
}

/// Migratetypes that have per-CPU lists (`MIGRATE_PCPTYPES`).
pub const MIGRATE_PCPTYPES: usize = 3;
/// Number of migratetypes (`MIGRATE_TYPES`, without CMA).
pub const MIGRATE_TYPES: usize = 5;

impl MigrateType {
    /// All migratetypes in order.
    pub const ALL: [MigrateType; MIGRATE_TYPES] = [
        MigrateType::Unmovable,
        MigrateType::Movable,
        MigrateType::Reclaimable,
        MigrateType::HighAtomic,
        MigrateType::Isolate,
    ];

    /// The name `/proc/pagetypeinfo` prints.
    pub const fn name(self) -> &'static str {
        match self {
            MigrateType::Unmovable => "Unmovable",
            MigrateType::Movable => "Movable",
            MigrateType::Reclaimable => "Reclaimable",
            MigrateType::HighAtomic => "HighAtomic",
            MigrateType::Isolate => "Isolate",
        }
    }
}
