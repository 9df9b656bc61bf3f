//! The warehouses of one command: searched in order for a ware, one of
//! them (`--save-to`, else the first) where packs and outputs go, and the
//! download area remote wares land in. The API the formula run (and a
//! cache of unpacked wares) uses: `local` / `fetch` / `open_verified` for
//! inputs, `pack` / `save` for outputs.

use std::cell::OnceCell;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::client::Client;
use super::download::{DownloadArea, present, store_verified};
use super::error::RemoteError;
use super::location::Location;
use super::settings::{DEFAULT_DOWNLOAD_DIR, S3Config, S3Settings, WarehouseConfig};
use super::store::Store;
use crate::formula::{Filters, WareError, WareId, Warehouse};

pub struct Warehouses {
    search: Vec<Location>,
    save: Option<Location>,
    area: DownloadArea,
    /// Resolved when the first S3 store is used: a run with local
    /// warehouses only never reads an `AWS_*` variable. Boxed: a formula
    /// job carries it, and most never use it.
    s3: Box<S3Config>,
    client: OnceCell<Client>,
}

impl Warehouses {
    /// From the flags (`--warehouse`, repeatable, and `--save-to`), else
    /// the config's `warehouse.fetch` and `warehouse.save`.
    pub fn from_options(
        flags: &[PathBuf],
        save_to: Option<&Path>,
        config: &WarehouseConfig,
    ) -> Result<Warehouses, RemoteError> {
        let search = if flags.is_empty() {
            config.fetch.iter().map(|u| Location::parse(Path::new(u))).collect::<Result<Vec<_>, _>>()?
        } else {
            flags.iter().map(|p| Location::parse(p)).collect::<Result<Vec<_>, _>>()?
        };
        let save = match (save_to, &config.save) {
            (Some(p), _) => Some(Location::parse(p)?),
            (None, Some(u)) if flags.is_empty() => Some(Location::parse(Path::new(u))?),
            _ => search.first().cloned(),
        };
        let area = DownloadArea::new(config.download_dir.clone().unwrap_or_else(|| DEFAULT_DOWNLOAD_DIR.into()));
        Ok(Warehouses { search, save, area, s3: Box::new(config.s3.clone()), client: OnceCell::new() })
    }

    pub fn download_area(&self) -> &DownloadArea {
        &self.area
    }

    fn client(&self) -> &Client {
        self.client.get_or_init(Client::new)
    }

    /// The store of a remote location; `None` for a local one.
    fn store(&self, location: &Location) -> Result<Option<Store>, RemoteError> {
        Ok(Some(match location {
            Location::Local(_) => return Ok(None),
            Location::Http(base) => Store::Http { base: base.clone() },
            Location::S3 { bucket, prefix } => Store::S3 {
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                settings: S3Settings::resolve(&self.s3, &|k| std::env::var(k).ok())?,
            },
        }))
    }

    /// The local warehouse that holds `id`: the first local one that has
    /// it, or the download area, into which the first remote one that has
    /// it is downloaded (once, under the ware's lock; verified before it
    /// is named). Local copies are verified when opened.
    pub fn local(&self, id: &WareId) -> Result<Warehouse, RemoteError> {
        if self.search.is_empty() {
            return Err(WareError::NoWarehouse.into());
        }
        let mut searched = Vec::new();
        let mut area_looked = false;
        for location in &self.search {
            if let Location::Local(dir) = location {
                let warehouse = Warehouse::new(dir);
                if present(&warehouse, id) {
                    return Ok(warehouse);
                }
                searched.push(location.to_string());
                continue;
            }
            let Some(store) = self.store(location)? else { continue };
            if !area_looked && self.area.has(id) {
                return Ok(self.area.warehouse());
            }
            area_looked = true;
            let _lock = self.area.lock(id)?;
            // Downloaded by whoever held the lock before us.
            if self.area.has(id) {
                return Ok(self.area.warehouse());
            }
            let (body, shown) = store.get(self.client(), id)?;
            match body {
                Some(body) => {
                    log::info!("downloading {id} from {shown}");
                    store_verified(&self.area.warehouse(), id, body, &shown)?;
                    return Ok(self.area.warehouse());
                }
                None => searched.push(shown),
            }
        }
        Err(RemoteError::NotFound { id: id.to_string(), searched: searched.join(", ") })
    }

    /// The path of a local copy of `id` (downloaded if need be; see
    /// `local`): what a cache of unpacked wares takes as its source,
    /// after opening it with `Warehouse::open_verified`.
    pub fn fetch(&self, id: &WareId) -> Result<PathBuf, RemoteError> {
        Ok(self.local(id)?.ware_path(id))
    }

    /// The ware, verified, as an open file at its start
    /// (`Warehouse::open_verified`), wherever it came from.
    pub fn open_verified(&self, id: &WareId) -> Result<File, RemoteError> {
        Ok(self.local(id)?.open_verified(id)?)
    }

    /// Where packs and outputs go; an error before anything runs if there
    /// is none or it cannot be written to.
    pub fn save_target(&self) -> Result<&Location, RemoteError> {
        match &self.save {
            None => Err(WareError::NoWarehouse.into()),
            Some(Location::Http(url)) => Err(RemoteError::ReadOnly { url: url.clone() }),
            Some(location) => Ok(location),
        }
    }

    /// Packs `source` with `filters` into the save target: straight into a
    /// local one; for a remote one into the download area, then uploaded.
    pub fn pack(&self, source: &Path, filters: &Filters) -> Result<WareId, RemoteError> {
        match self.save_target()? {
            Location::Local(dir) => Ok(Warehouse::new(dir).pack(source, filters)?),
            remote => {
                let id = self.area.warehouse().pack(source, filters)?;
                self.upload(remote, &self.area.warehouse(), &id)?;
                Ok(id)
            }
        }
    }

    /// Saves the ware `id`, found as `local` finds it, to the save target
    /// (unless it has it already).
    pub fn save(&self, id: &WareId) -> Result<PathBuf, RemoteError> {
        let from = self.local(id)?;
        match self.save_target()? {
            Location::Local(dir) => {
                let to = Warehouse::new(dir);
                if !present(&to, id) {
                    let file = from.open_verified(id)?;
                    store_verified(&to, id, file, &from.ware_path(id).display().to_string())?;
                }
                Ok(to.ware_path(id))
            }
            remote => {
                self.upload(remote, &from, id)?;
                Ok(from.ware_path(id))
            }
        }
    }

    /// Uploads `id` from the local `from` to `remote`, verified first;
    /// skipped when the store has an object of that name (content named
    /// by its hash: same name, same ware, checked on every read).
    fn upload(&self, remote: &Location, from: &Warehouse, id: &WareId) -> Result<(), RemoteError> {
        let Some(store) = self.store(remote)? else {
            return Ok(());
        };
        if store.has(self.client(), id)? {
            log::info!("{} is there already", store.shown(id));
            return Ok(());
        }
        let file = from.open_verified(id)?;
        log::info!("uploading {id} to {}", store.shown(id));
        store.put(self.client(), id, &file)
    }
}
