//! The only PKCS#11 calls made around cryptoki, for what cryptoki 0.12 cannot express:
//! mechanism codes it does not know.
//!
//! cryptoki 0.12.1 (the latest release) has no `MechanismType` for
//! CKM_AES_KEY_WRAP_KWP (0x210B, PKCS#11 3.0's name for RFC 5649 key wrap with padding),
//! silently drops such codes from `get_mechanism_list`, and offers no public constructor
//! for a standard mechanism it lacks (`MechanismType::new_vendor_defined` refuses codes
//! below CKM_VENDOR_DEFINED). Tokens written to PKCS#11 3.0, kryoptic among them, offer
//! RFC 5649 only under 0x210B, so the wrapped import needs these three calls raw:
//! C_GetMechanismList, C_GetMechanismInfo and C_UnwrapKey.
//!
//! How: the module's file is opened a second time with cryptoki-sys (the dlopen(3) of a
//! path already loaded returns the same library, so its state, C_Initialize included, is
//! the one cryptoki's context already set up) and `C_GetFunctionList` gives the module's
//! own function table. Session and object handles come from cryptoki and go back to it.
//!
//! What that relies on, the types enforce: a [`RawModule`] is made only from a live
//! [`Module`] and borrows it (as cryptoki's `Session` holds its `Pkcs11`), so the module
//! stays loaded and initialised for as long as the table is used; and the extra dlopen
//! and dlclose happen under the same lock as the module's own load and unload
//! ([`module::loading`]), so they never race another context's C_Initialize or unload.
//! This module and src/xml/raw.rs (libxml2's c14n and serialisation as bytes) are the
//! crate's only `unsafe` code; each block says what it relies on.
#![allow(unsafe_code)]

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, Rv};
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use cryptoki_sys::{
    CK_ATTRIBUTE, CK_FLAGS, CK_FUNCTION_LIST, CK_MECHANISM, CK_MECHANISM_INFO, CK_MECHANISM_TYPE,
    CK_OBJECT_HANDLE, CK_ULONG,
};

use super::module::{self, Module};

/// CKM_AES_KEY_WRAP_PAD (PKCS#11 2.40): RFC 5649, the code SoftHSM 2.6.1 offers.
pub const CKM_AES_KEY_WRAP_PAD: CK_MECHANISM_TYPE = cryptoki_sys::CKM_AES_KEY_WRAP_PAD;
/// CKM_AES_KEY_WRAP_KWP (PKCS#11 3.0): RFC 5649 under its 3.0 name, the code kryoptic
/// offers.
pub const CKM_AES_KEY_WRAP_KWP: CK_MECHANISM_TYPE = cryptoki_sys::CKM_AES_KEY_WRAP_KWP;
/// The CKF_UNWRAP flag of CK_MECHANISM_INFO.
pub const CKF_UNWRAP: CK_FLAGS = cryptoki_sys::CKF_UNWRAP;

/// A PKCS#11 module's function table, reached beside cryptoki's context for the same
/// module. It borrows that [`Module`], which keeps the module loaded and initialised
/// while the table is used: build one per job with [`RawModule::of`], and drop it with
/// the job.
pub struct RawModule<'m> {
    // The module whose context set up the state every call here relies on.
    _module: &'m Module,
    // Keeps the library mapped while `list` points into it; `Option` only so that `Drop`
    // can unload it under the load lock.
    library: Option<cryptoki_sys::Pkcs11>,
    list: *const CK_FUNCTION_LIST,
}

impl Drop for RawModule<'_> {
    fn drop(&mut self) {
        let _unloading = module::loading();
        drop(self.library.take());
    }
}

impl<'m> RawModule<'m> {
    /// The function table of `module`, which cryptoki has loaded and initialised.
    pub fn of(module: &'m Module) -> Result<Self, CkError> {
        let library = {
            let _loading = module::loading();
            // SAFETY: loading a library runs its initialisers. `module` is borrowed, so
            // its path is loaded and initialised by cryptoki for as long as `Self` lives:
            // dlopen returns that same mapping and runs nothing new. The load lock keeps
            // this from racing another context's load or unload of the library.
            unsafe { cryptoki_sys::Pkcs11::new(module.path()) }.map_err(CkError::LibraryLoading)?
        };
        let get = library
            .C_GetFunctionList
            .as_ref()
            .map_err(|_| CkError::MissingSymbol("C_GetFunctionList"))?;
        let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        // SAFETY: C_GetFunctionList writes one pointer to a table owned by the module,
        // valid while the library is mapped (`library`, and the borrowed `module`, hold
        // it).
        Rv::from(unsafe { get(&mut list) }).into_result(Function::GetFunctionList)?;
        if list.is_null() {
            return Err(CkError::NullFunctionPointer);
        }
        Ok(Self {
            _module: module,
            library: Some(library),
            list,
        })
    }

    fn table(&self) -> &CK_FUNCTION_LIST {
        // SAFETY: checked non-null in `of`; the module keeps the table alive and
        // unchanged while it is loaded, which the borrowed `Module` (loaded and
        // initialised for the whole of `'m`) and `library` guarantee.
        unsafe { &*self.list }
    }

    /// Every mechanism code `slot` offers, including those cryptoki does not know.
    pub fn mechanism_list(&self, slot: Slot) -> Result<Vec<CK_MECHANISM_TYPE>, CkError> {
        let f = self
            .table()
            .C_GetMechanismList
            .ok_or(CkError::NullFunctionPointer)?;
        let mut count: CK_ULONG = 0;
        // SAFETY: the size query: a NULL list and a valid count pointer.
        Rv::from(unsafe { f(slot.id(), std::ptr::null_mut(), &mut count) })
            .into_result(Function::GetMechanismList)?;
        let mut codes: Vec<CK_MECHANISM_TYPE> = vec![0; count as usize];
        // SAFETY: `codes` has room for `count` entries; the module writes at most that
        // many and updates `count` (CKR_BUFFER_TOO_SMALL if the list grew meanwhile).
        Rv::from(unsafe { f(slot.id(), codes.as_mut_ptr(), &mut count) })
            .into_result(Function::GetMechanismList)?;
        codes.truncate(count as usize);
        Ok(codes)
    }

    /// The CK_MECHANISM_INFO flags of `mechanism` on `slot`.
    pub fn mechanism_flags(
        &self,
        slot: Slot,
        mechanism: CK_MECHANISM_TYPE,
    ) -> Result<CK_FLAGS, CkError> {
        let f = self
            .table()
            .C_GetMechanismInfo
            .ok_or(CkError::NullFunctionPointer)?;
        let mut info = CK_MECHANISM_INFO::default();
        // SAFETY: `info` is a valid, writable CK_MECHANISM_INFO.
        Rv::from(unsafe { f(slot.id(), mechanism, &mut info) })
            .into_result(Function::GetMechanismInfo)?;
        Ok(info.flags)
    }

    /// C_UnwrapKey on `session` with `mechanism` and no parameter (as RFC 5649 with the
    /// default IV takes it), `kek` as the unwrapping key, and `template` for the new key.
    pub fn unwrap_key(
        &self,
        session: &Session,
        mechanism: CK_MECHANISM_TYPE,
        kek: ObjectHandle,
        wrapped: &[u8],
        template: &[Attribute],
    ) -> Result<ObjectHandle, CkError> {
        let f = self
            .table()
            .C_UnwrapKey
            .ok_or(CkError::NullFunctionPointer)?;
        let mut mech = CK_MECHANISM {
            mechanism,
            pParameter: std::ptr::null_mut(),
            ulParameterLen: 0,
        };
        // Borrows the attribute values: `template` outlives the call.
        let mut attrs: Vec<CK_ATTRIBUTE> = template.iter().map(CK_ATTRIBUTE::from).collect();
        let mut handle: CK_OBJECT_HANDLE = 0;
        // SAFETY: the session handle is cryptoki's, open on this module; every pointer
        // is valid for the call and the lengths match their buffers. PKCS#11 does not
        // write through pWrappedKey or pTemplate, whatever their C types say.
        let rv = unsafe {
            f(
                session.handle(),
                &mut mech,
                kek.handle(),
                wrapped.as_ptr() as *mut u8,
                wrapped.len() as CK_ULONG,
                attrs.as_mut_ptr(),
                attrs.len() as CK_ULONG,
                &mut handle,
            )
        };
        Rv::from(rv).into_result(Function::UnwrapKey)?;
        // SAFETY: a handle the module has just returned for a new object in this
        // session; handing it to cryptoki is what cryptoki itself would do.
        Ok(unsafe { ObjectHandle::new_from_raw(handle) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_rfc_5649_codes() {
        assert_eq!(CKM_AES_KEY_WRAP_PAD, 0x210A);
        assert_eq!(CKM_AES_KEY_WRAP_KWP, 0x210B);
    }
}
