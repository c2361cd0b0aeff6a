// A real OpenID Connect provider (the npm package oidc-provider) for Fireside's login tests.
// Usage: node provider.mjs, with its settings in the environment:
//   LISTEN_FD     a listening socket the test bound and passed down (no race for a port)
//   ISSUER        the provider's URL, e.g. http://127.0.0.1:PORT
//   CLIENT_ID, CLIENT_SECRET, REDIRECT_URI   the one client: the Fireside server under test
// Logging in goes through oidc-provider's own development login and consent pages, which
// accept any login: the login is the account's email, and one starting with "unverified:"
// has email_verified false.
import Provider from 'oidc-provider';

const { LISTEN_FD, ISSUER, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI } = process.env;

const UNVERIFIED = 'unverified:';

const provider = new Provider(ISSUER, {
  clients: [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    redirect_uris: [REDIRECT_URI],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  async findAccount(_ctx, id) {
    const verified = !id.startsWith(UNVERIFIED);
    const email = verified ? id : id.slice(UNVERIFIED.length);
    return {
      accountId: id,
      async claims() {
        return { sub: id, email, email_verified: verified, name: email.split('@')[0] };
      },
    };
  },
  pkce: { required: () => true },
  ttl: { Interaction: 600, Session: 3600, Grant: 3600, AccessToken: 600, IdToken: 600 },
});

provider.listen({ fd: Number(LISTEN_FD) }, () => console.log(`oidc-provider listening at ${ISSUER}`));
