//! Identity binding: the identity mirrors a `JobRequest` carries (tenant, principal,
//! metadata tenant and actor, `env` tenant and principal, its own `identity`) must agree
//! with the envelope's authoritative `IdentityBinding`; a mirror that disagrees is refused,
//! never reconciled (the peer's `validate_identity_binding`).

use super::ProductionError;
use cap_proto::v1::{IdentityBinding, JobRequest};

/// Checks every non-empty identity mirror of `request` against `authoritative` (which
/// must name a tenant): `tenant_id`, `meta.tenant_id` and `env["tenant_id"]` against the
/// tenant; `principal_id` and `env["principal_id"]` against the principal; `meta.actor_id`
/// against the actor; and `request.identity`, when present, must equal it field by field.
///
/// ```
/// use cap_proto::v1::{IdentityBinding, JobRequest};
/// use cap_sign::production::{validate_identity_binding, ProductionError};
///
/// let who = IdentityBinding { tenant_id: "acme".into(), principal_id: "alice".into(), ..Default::default() };
/// let mut req = JobRequest { tenant_id: "acme".into(), ..Default::default() };
/// validate_identity_binding(&req, &who).unwrap();
/// req.principal_id = "mallory".into();
/// assert_eq!(validate_identity_binding(&req, &who), Err(ProductionError::IdentityMismatch("principal")));
/// ```
pub fn validate_identity_binding(
    request: &JobRequest,
    authoritative: &IdentityBinding,
) -> Result<(), ProductionError> {
    if authoritative.tenant_id.is_empty() {
        return Err(ProductionError::IdentityMismatch(
            "missing authoritative identity",
        ));
    }
    let meta = request.meta.as_ref();
    let env = |k: &str| request.env.get(k).map(String::as_str).unwrap_or_default();
    let mirrors: [(&'static str, &str, &str); 6] = [
        ("tenant", &request.tenant_id, &authoritative.tenant_id),
        (
            "principal",
            &request.principal_id,
            &authoritative.principal_id,
        ),
        (
            "meta.tenant",
            meta.map(|m| m.tenant_id.as_str()).unwrap_or_default(),
            &authoritative.tenant_id,
        ),
        (
            "meta.actor",
            meta.map(|m| m.actor_id.as_str()).unwrap_or_default(),
            &authoritative.actor_id,
        ),
        ("env.tenant", env("tenant_id"), &authoritative.tenant_id),
        (
            "env.principal",
            env("principal_id"),
            &authoritative.principal_id,
        ),
    ];
    for (name, actual, expected) in mirrors {
        if !actual.is_empty() && actual != expected {
            return Err(ProductionError::IdentityMismatch(name));
        }
    }
    if let Some(own) = &request.identity
        && own != authoritative
    {
        return Err(ProductionError::IdentityMismatch("request.identity"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_proto::v1::JobMetadata;

    fn who() -> IdentityBinding {
        IdentityBinding {
            tenant_id: "acme".into(),
            principal_id: "alice".into(),
            actor_id: "svc-1".into(),
            delegation_id: "d-1".into(),
        }
    }

    #[test]
    fn every_mirror_is_checked() {
        let ok = JobRequest {
            tenant_id: "acme".into(),
            principal_id: "alice".into(),
            meta: Some(JobMetadata {
                tenant_id: "acme".into(),
                actor_id: "svc-1".into(),
                ..Default::default()
            }),
            env: [
                ("tenant_id".to_string(), "acme".to_string()),
                ("principal_id".to_string(), "alice".to_string()),
            ]
            .into(),
            identity: Some(who()),
            ..Default::default()
        };
        validate_identity_binding(&ok, &who()).unwrap();
        // Empty mirrors are not compared.
        validate_identity_binding(&JobRequest::default(), &who()).unwrap();

        type Mutation = Box<dyn Fn(&mut JobRequest)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("tenant", Box::new(|r| r.tenant_id = "evil".into())),
            ("principal", Box::new(|r| r.principal_id = "evil".into())),
            (
                "meta.tenant",
                Box::new(|r| r.meta.as_mut().unwrap().tenant_id = "evil".into()),
            ),
            (
                "meta.actor",
                Box::new(|r| r.meta.as_mut().unwrap().actor_id = "evil".into()),
            ),
            (
                "env.tenant",
                Box::new(|r| {
                    r.env.insert("tenant_id".into(), "evil".into());
                }),
            ),
            (
                "env.principal",
                Box::new(|r| {
                    r.env.insert("principal_id".into(), "evil".into());
                }),
            ),
            (
                "request.identity",
                Box::new(|r| r.identity.as_mut().unwrap().delegation_id = "other".into()),
            ),
        ];
        for (name, mutate) in cases {
            let mut bad = ok.clone();
            mutate(&mut bad);
            assert_eq!(
                validate_identity_binding(&bad, &who()),
                Err(ProductionError::IdentityMismatch(name)),
                "{name}"
            );
        }
        assert_eq!(
            validate_identity_binding(&ok, &IdentityBinding::default()),
            Err(ProductionError::IdentityMismatch(
                "missing authoritative identity"
            ))
        );
    }
}
