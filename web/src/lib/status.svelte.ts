/** What a page's last action said: a notice when it worked, an error when it did not. */
export class ActionStatus {
  message = $state('');
  error = $state('');
  #latest = 0;

  /**
   * Runs `action`, clearing the last status first; `done` is the notice on success. An action
   * that ends after a newer one began (the page's first load, finishing after an import the
   * reader started at once) leaves the newer one's notice alone; its own error still shows.
   */
  run = async (action: () => Promise<void>, done = ''): Promise<void> => {
    const mine = ++this.#latest;
    this.error = '';
    this.message = '';
    try {
      await action();
      if (mine === this.#latest) this.message = done;
    } catch (e) {
      this.error = (e as Error).message;
    }
  };
}
